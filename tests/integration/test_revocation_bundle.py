"""Revocations reach the running server in the signed bundle, within one bundle poll.

The real stack: OPA configured as deployed (deploy/opa) polls a local bundle
server every second; the server (spool submitter) asks it. The operator's
steps are the playbook's (docs/operations.md, "Incident playbook"):
``tokensvc revoke host H`` edits the revocations data, the bundle is rebuilt
and re-signed, OPA fetches and activates it. From then on a token minted on
H before the revocation is refused with the policy's reason; a token from
another node still works.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from admission_stack import ROOT, forge_token, http, job_body, needs_root, spooled, stack_fixture
from support.opa import OpaHandle

from tokensvc.cluster.devstack import USER_A, USER_B, USER_C, Stack
from tokensvc.core.keys import KeyRing

pytestmark = [needs_root, pytest.mark.root]

HOST = "login3"  # the compromised user node
OTHER_HOST = "login1"
OTHER_KEY = "00000000000000a1"  # a key id no token of this stack is sealed with
ISSUED_AGO = 5  # seconds: tokens that were surely issued before `--before now`


@pytest.fixture(scope="module")
def stack(opa: OpaHandle) -> Iterator[Stack]:
    yield from stack_fixture(external_opa=opa.url)


def revoke(stack: Stack, data_file: Path, *args: str) -> None:
    """``tokensvc revoke --file DATA_FILE ARGS`` as the operator runs it."""
    run = subprocess.run(
        [*stack.tokensvc("revoke", "--file", str(data_file)), *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "make bundle" in run.stdout


def ship(opa: OpaHandle, data_dir: Path, revision: str) -> None:
    """Rebuild and re-sign the bundle from ``data_dir``; return once OPA has activated it."""
    opa.publish(opa.build_bundle(revision, data_dir=data_dir, revision=revision))
    deadline = time.monotonic() + 20
    while opa.revision() != revision:
        assert time.monotonic() < deadline, f"bundle {revision} not activated:\n{opa.log()}"
        time.sleep(0.05)


def uid_revoked_before(data_file: Path) -> int:
    """The ``issued_before`` of the one uid revocation in ``data_file``."""
    (entry,) = yaml.safe_load(data_file.read_text())["uids"]
    issued_before: int = entry["issued_before"]
    return issued_before


def listing(identity: dict[str, Any]) -> dict[str, Any]:
    return {"identity": identity, "action": "list", "request": {}}


def test_revoked_host_is_refused_through_the_server_after_one_bundle_poll(
    stack: Stack, opa: OpaHandle, tmp_path: Path
) -> None:
    body = job_body()
    first = http(
        stack, "POST", "/v1/jobs", forge_token(stack, USER_A, host=HOST, body=body), json=body
    )
    assert first.status_code == 201, first.text

    # Minted on HOST before the incident; not yet spent.
    stolen = forge_token(stack, USER_A, host=HOST, body=body, issued_ago=ISSUED_AGO)
    stolen_for_list = forge_token(stack, USER_A, host=HOST, issued_ago=ISSUED_AGO)
    elsewhere = forge_token(stack, USER_A, host=OTHER_HOST, body=body, issued_ago=ISSUED_AGO)
    user_c = forge_token(stack, USER_C, host=OTHER_HOST, issued_ago=ISSUED_AGO)
    user_b = forge_token(stack, USER_B, host=OTHER_HOST, issued_ago=ISSUED_AGO)

    data_dir = tmp_path / "data"
    shutil.copytree(ROOT / "policies" / "data", data_dir)
    data_file = data_dir / "wsc" / "revocations" / "data.yaml"
    revoke(stack, data_file, "host", HOST, "--reason", "node compromised")  # --before: now
    revoke(stack, data_file, "uid", str(USER_C.uid), "--reason", "account compromised")
    revoke(stack, data_file, "key", OTHER_KEY, "--reason", "key leaked")
    before = spooled(stack)
    ship(opa, data_dir, "revoked")

    refused = http(stack, "POST", "/v1/jobs", stolen, json=body)
    assert refused.status_code == 403, refused.text
    answer = refused.json()
    assert answer["code"] == "denied"
    (reason,) = answer["reasons"]
    assert reason.startswith(f'tokens minted on host "{HOST}" before ')
    assert reason.endswith(" are revoked (node compromised)")
    assert spooled(stack) == before  # nothing stored for the refused submit

    # Every action of a revoked token is refused, not only submit.
    assert http(stack, "GET", "/v1/jobs", stolen_for_list).status_code == 403

    # Another node's token of the same user still submits.
    other = http(stack, "POST", "/v1/jobs", elsewhere, json=body)
    assert other.status_code == 201, other.text

    # A revoked uid is refused from any node; other users are not.
    by_uid = http(stack, "GET", "/v1/jobs", user_c)
    assert by_uid.status_code == 403
    assert by_uid.json()["reasons"] == [
        f"tokens of uid {USER_C.uid} issued before {uid_revoked_before(data_file)} are revoked"
        " (account compromised)"
    ]
    assert http(stack, "GET", "/v1/jobs", user_b).status_code == 200


def test_revoked_key_is_refused_by_the_policy(stack: Stack, opa: OpaHandle, tmp_path: Path) -> None:
    # Tokens carry their key id to OPA; the stack's own key stays good, so
    # the decision is asked of OPA directly with a token's identity.
    data_dir = tmp_path / "data"
    shutil.copytree(ROOT / "policies" / "data", data_dir)
    revoke(
        stack,
        data_dir / "wsc" / "revocations" / "data.yaml",
        "key",
        OTHER_KEY,
        "--reason",
        "key leaked",
    )
    ship(opa, data_dir, "key-revoked")
    active = KeyRing.load(stack.keyring).active.key_id
    identity = {
        "uid": USER_A.uid, "gid": USER_A.gid, "groups": list(USER_A.groups), "user": USER_A.name,
        "host": OTHER_HOST, "realm": stack.realm, "issued_at": int(time.time()),
        "token_id": "0123456789abcdef0123456789abcdef",
    }  # fmt: skip
    revoked = opa.decide(listing({**identity, "key_id": OTHER_KEY}))
    assert revoked is not None and revoked["allow"] is False
    assert revoked["reasons"] == [f"key {OTHER_KEY}: revoked (key leaked)"]
    good = opa.decide(listing({**identity, "key_id": active}))
    assert good is not None and good["allow"] is True
    assert http(stack, "GET", "/v1/jobs", forge_token(stack, USER_A)).status_code == 200
