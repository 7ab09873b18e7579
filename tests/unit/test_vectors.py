"""The committed test vectors, checked both ways, and kept in sync with their generator."""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tokensvc.core import errors
from tokensvc.core.claims import Claims
from tokensvc.core.digest import canonical_json, request_digest
from tokensvc.core.errors import KeyFileError
from tokensvc.core.keys import Key, KeyRing
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.token import _seal_with_nonce, open_token
from tokensvc.core.validate import TokenValidator

ROOT = Path(__file__).resolve().parents[2]
VECTOR_DIR = ROOT / "tests" / "vectors"
FILES = sorted(VECTOR_DIR.glob("token_v*.json"))
KEYRING = json.loads((VECTOR_DIR / "keyring_v1.json").read_text(encoding="utf-8"))


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts/make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cases() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for path in FILES:
        document = json.loads(path.read_text(encoding="utf-8"))
        out += [(document, case) for case in document["cases"]]
    return out


CASES = _cases()
IDS = [case["description"] for _, case in CASES]


def _ring(document: dict[str, Any]) -> KeyRing:
    return KeyRing(
        tuple(
            Key(
                k["key_id"],
                bytes.fromhex(k["secret"]),
                k["state"],
                not_before=k.get("not_before"),
                not_after=k.get("not_after"),
            )
            for k in document["keys"]
        )
    )


def test_vector_files_exist() -> None:
    names = {p.name for p in VECTOR_DIR.glob("*.json")}
    assert names == {
        "token_v1_valid.json",
        "token_v1_invalid.json",
        "token_v2_valid.json",
        "token_v2_invalid.json",
        "keyring_v1.json",
    }
    assert len(CASES) > 60


def test_keyring_vector_both_ways() -> None:
    ring = KeyRing.parse(KEYRING["text"].encode("ascii"))
    assert [
        {"key_id": k.key_id, "state": k.state, "created": k.created, "secret": k.secret.hex()}
        for k in ring.keys
    ] == KEYRING["keys"]
    keys = tuple(
        Key(k["key_id"], bytes.fromhex(k["secret"]), k["state"], k["created"])
        for k in KEYRING["keys"]
    )
    assert KeyRing(keys).to_bytes().decode("ascii") == KEYRING["text"]


def test_windowed_keyring_vector_both_ways() -> None:
    windowed = KEYRING["windowed"]
    ring = KeyRing.parse(windowed["text"].encode("ascii"))
    fields = ("key_id", "state", "created", "not_before", "not_after")
    assert [
        {**{f: getattr(k, f) for f in fields}, "secret": k.secret.hex()} for k in ring.keys
    ] == windowed["keys"]
    keys = tuple(
        Key(
            k["key_id"],
            bytes.fromhex(k["secret"]),
            k["state"],
            k["created"],
            k["not_before"],
            k["not_after"],
        )
        for k in windowed["keys"]
    )
    assert KeyRing(keys).to_bytes().decode("ascii") == windowed["text"]
    assert windowed["text"].startswith(KEYRING["text"])  # windowless lines are unchanged


@pytest.mark.parametrize(
    "case", KEYRING["invalid"], ids=[c["description"] for c in KEYRING["invalid"]]
)
def test_keyring_vector_invalid(case: dict[str, str]) -> None:
    with pytest.raises(KeyFileError):
        KeyRing.parse(case["text"].encode("ascii"))


def test_committed_vectors_match_the_generator() -> None:
    script = _load_script()
    for name, document in script.build().items():
        assert (VECTOR_DIR / name).read_text(encoding="utf-8") == script.render(document), (
            f"{name} is stale: run scripts/make_vectors.py"
        )


def test_every_case_is_described_once() -> None:
    assert all(isinstance(d, str) and d for d in IDS)
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize(
    ("document", "case"),
    [c for c in CASES if "seal" in c[1]],
    ids=[c[1]["description"] for c in CASES if "seal" in c[1]],
)
def test_sealing_the_inputs_gives_the_token(document: dict[str, Any], case: dict[str, Any]) -> None:
    seal = case["seal"]
    key = _ring(document).find(seal["key_id"])
    assert key is not None
    token = _seal_with_nonce(
        Claims.from_dict(seal["claims"]),
        key,
        bytes.fromhex(seal["nonce"]),
        max_ttl=seal.get("max_ttl", document["max_ttl"]),
        version=seal["version"],
    )
    assert token == case["token"]


@pytest.mark.parametrize(
    ("document", "case"),
    [c for c in CASES if "request" in c[1]],
    ids=[c[1]["description"] for c in CASES if "request" in c[1]],
)
def test_request_digests_are_canonical(document: dict[str, Any], case: dict[str, Any]) -> None:
    request = case["request"]
    assert canonical_json(request["document"]).decode("utf-8") == request["canonical_json"]
    assert request_digest(request["document"]) == request["digest"]


@pytest.mark.parametrize(("document", "case"), CASES, ids=IDS)
def test_opening_the_token_gives_the_expected_result(
    document: dict[str, Any], case: dict[str, Any]
) -> None:
    ring = _ring(document)
    validator = TokenValidator(
        ring,
        realm=document["realm"],
        replay=MemoryReplayCache(),
        max_ttl=document["max_ttl"],
        skew=document["skew"],
        key_grace=document.get("key_grace"),
    )
    request = case.get("request")

    def validate() -> Claims:
        if request is None:
            return validator.validate(case["token"], now=case["now"])
        return validator.validate(
            case["token"],
            now=case["now"],
            request_digest=request["digest"],
            unbound_allowed=request["unbound_allowed"],
        )

    expect = case["expect"]
    for _ in range(case.get("repeat", 1) - 1):
        with contextlib.suppress(errors.TokenRejected):  # only the last result is judged
            validate()
    if "claims" in expect:
        claims = validate()
        assert claims.to_dict() == expect["claims"]
        assert open_token(case["token"], ring)[1].key_id == expect["key_id"]
    else:
        error_type = getattr(errors, expect["error"])
        with pytest.raises(errors.TokenServiceError) as info:
            validate()
        assert type(info.value) is error_type
        assert info.value.exit_code == expect["exit_code"]
