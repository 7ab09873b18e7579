"""The signed policy bundle in a real OPA, configured as deployed.

OPA runs with deploy/opa/config.yaml and fetches the bundle `make bundle`
builds from a local bundle server: decisions come through the REST API, the
decision log erases identity fields beyond uid/gid/groups, and a tampered or
unsigned bundle is never activated (OPA keeps the last good one, or stays
not-ready when it never had one).
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.opa import OpaHandle, builder, start_opa

generate_signing_key = builder.generate_signing_key

# No skip when OPA is missing: `make pytest` installs it first, and a missing
# tool must fail the run, not hide it.

LEVELS = {
    "member": {
        "submit": True, "view_others": True, "act_on_others": False,
        "max_systems": 2, "max_priority": 5, "default_priority": 3,
    },
    "admin": {
        "submit": True, "view_others": True, "act_on_others": True,
        "max_systems": 8, "max_priority": 10, "default_priority": 5,
    },
}  # fmt: skip
DATA = {
    "levels": LEVELS,
    "groups": {"2001": {"name": "ml-team", "default_level": "member", "users": {"1001": "admin"}}},
    "exports": {
        "/nfs/projects": {
            "name": "projects", "server": "nfs1", "export": "/srv/projects", "pvc": "nfs-projects",
            "rules": {"ml": {"groups": {"ml-team": "rw"}}},
        }
    },
}  # fmt: skip

ALICE = {
    "uid": 1001,
    "gid": 1001,
    "groups": [2001],
    "user": "alice",
    "host": "login1",
    "realm": "t",
}
BOB = {"uid": 1002, "gid": 1002, "groups": [2001], "user": "bob", "host": "login2", "realm": "t"}


def submit(identity: dict[str, Any], systems: int = 1) -> dict[str, Any]:
    return {
        "identity": identity,
        "action": "submit",
        "request": {
            "project": "ml-team",
            "command": ["python", "train.py"],
            "mounts": [{"path": "/nfs/projects/ml/data", "mode": "rw"}],
            "resources": {"systems": systems},
        },
    }


def tampered(bundle: bytes, member: str, edit: Any) -> bytes:
    """bundle with one file's content rewritten; .signatures.json left as it was."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as src,
        tarfile.open(fileobj=out, mode="w:gz") as dst,
    ):
        for info in src.getmembers():
            f = src.extractfile(info)
            content = f.read() if f is not None else b""
            if info.name.lstrip("/") == member:
                content = edit(content)
                info.size = len(content)
            dst.addfile(info, io.BytesIO(content))
    return out.getvalue()


def make_members_admins(data_json: bytes) -> bytes:
    return data_json.replace(b'"default_level":"member"', b'"default_level":"admin"').replace(
        b'"default_level": "member"', b'"default_level": "admin"'
    )


@pytest.fixture
def opa(tmp_path: Path) -> Iterator[OpaHandle]:
    handle = start_opa(tmp_path, data=DATA, revision="good")
    yield handle
    handle.stop()


def test_signed_bundle_is_active_and_decides_through_rest(opa: OpaHandle) -> None:
    assert opa.health(bundles=True) == 200
    assert opa.revision() == "good"

    allowed = opa.decide(submit(ALICE))
    assert allowed is not None
    assert allowed["allow"] is True
    assert allowed["run_as"] == {"uid": 1001, "gid": 2001}
    assert allowed["supplemental_groups"] == [2001]
    assert allowed["mounts"] == [
        {
            "path": "/nfs/projects/ml/data",
            "export": "projects",
            "pvc": "nfs-projects",
            "sub_path": "ml/data",
            "read_only": False,
        }
    ]

    denied = opa.decide(submit(BOB, systems=3))
    assert denied is not None
    assert denied["allow"] is False
    assert denied["reasons"] == [
        'project "ml-team": 3 systems requested, level "member" allows at most 2'
    ]
    assert "run_as" not in denied


def test_decision_log_erases_identity_beyond_ids(opa: OpaHandle) -> None:
    result = opa.query("/v1/data/wsc/authz/decision", {"input": submit(ALICE)})
    decision_id = result["decision_id"]
    deadline = time.monotonic() + 10
    while True:
        logged = [r for r in opa.log_records() if r.get("decision_id") == decision_id]
        if logged or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert logged, opa.log()
    event = logged[0]
    assert event["msg"] == "Decision Log"
    assert event["input"]["identity"] == {"uid": 1001, "gid": 1001, "groups": [2001]}
    assert sorted(event["erased"]) == [
        "/input/identity/host",
        "/input/identity/realm",
        "/input/identity/user",
        "/input/request/command",
    ]
    assert "command" not in event["input"]["request"]
    assert event["bundles"] == {"wsc": {"revision": opa.revision()}}  # replayable against it
    assert "alice" not in opa.log() and "login1" not in opa.log()


def test_tampered_and_unsigned_bundles_are_refused_and_last_good_kept(opa: OpaHandle) -> None:
    good_bundle = opa.bundles.bundle
    assert good_bundle is not None
    before = opa.decide(submit(BOB, systems=3))
    assert before is not None and before["allow"] is False

    # Same signature, edited data that would make bob an admin (8 systems).
    forged = tampered(good_bundle, "data.json", make_members_admins)
    assert forged != good_bundle
    opa.wait_polled(opa.publish(forged))
    assert opa.revision() == "good"
    assert opa.health(bundles=True) == 200
    after = opa.decide(submit(BOB, systems=3))
    assert after == before

    # A correctly built bundle that nobody signed.
    unsigned = opa.build_bundle("unsigned", signed=False, revision="unsigned")
    opa.wait_polled(opa.publish(unsigned))
    assert opa.revision() == "good"
    assert opa.decide(submit(BOB, systems=3)) == before

    # Signed, but with a key OPA does not trust.
    stranger = generate_signing_key(opa.workdir / "stranger.pem")
    foreign = opa.build_bundle("foreign", signing_key=stranger, revision="foreign")
    opa.wait_polled(opa.publish(foreign))
    assert opa.revision() == "good"
    assert opa.decide(submit(BOB, systems=3)) == before

    errors = [r["msg"] for r in opa.log_records() if r.get("level") == "error"]
    assert any("data.json: digest mismatch" in m for m in errors), errors
    assert any("bundle missing .signatures.json file" in m for m in errors), errors
    assert any("failed to verify JWT signature" in m for m in errors), errors

    # The good bundle again, under a new revision: it is activated.
    opa.wait_polled(opa.publish(opa.build_bundle("next", revision="next")))
    deadline = time.monotonic() + 10
    while opa.revision() != "next" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opa.revision() == "next"


def backdoor(bundle: bytes) -> bytes:
    return tampered(bundle, "wsc/authz/authz.rego", lambda b: b + b"\nbackdoor := true\n")


@pytest.mark.parametrize("kind", ["unsigned", "tampered"])
def test_opa_without_a_good_bundle_stays_not_ready(tmp_path: Path, kind: str) -> None:
    handle = start_opa(
        tmp_path,
        data=DATA,
        signed=(kind == "tampered"),
        transform=backdoor if kind == "tampered" else None,
        wait=False,
    )
    try:
        handle.wait_polled(0, polls=3)
        assert handle.process.poll() is None, handle.log()
        assert handle.health(bundles=True) == 500
        assert handle.health(bundles=False) == 200  # the server is up, the policy is not
        assert handle.decide(submit(ALICE)) is None  # no decision document at all
        assert handle.revision() is None
        errors = [r["msg"] for r in handle.log_records() if r.get("level") == "error"]
        assert errors, handle.log()
    finally:
        handle.stop()
