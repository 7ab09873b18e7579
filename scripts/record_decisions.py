"""Record real decisions: drive a local stack with the demo cast, keep the server's decision lines.

The merge gate (``make policy-check``) replays these with ``tokensvc policy
diff`` against the committed and the edited policy, so the file must come
from the running server, never be written by hand. This starts the whole
stack (mint daemon, OPA with policies/, ``tokensvc server``), sends every
cast member's submits over a spread of projects, mounts and modes, a list,
and get / set_priority / cancel on each other's jobs, then writes the
server's ``decision`` audit lines, in order, to ``--out``.

Run as root (the mint daemon and the key ring are root's), from the
repository root:  ``make policy-decisions``  (refreshes the committed file).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tokensvc.cluster.devstack import CAST, Stack, User  # noqa: E402
from tokensvc.cluster.jobs import parse_job_request  # noqa: E402
from tokensvc.core.claims import new_claims  # noqa: E402
from tokensvc.core.digest import request_digest  # noqa: E402
from tokensvc.core.keys import KeyRing  # noqa: E402
from tokensvc.core.token import seal  # noqa: E402

PROJECTS = ("ml-team", "vision", "students", "datasets")
MOUNTS = (
    (),
    (("/nfs/projects/ml/data", "rw"),),
    (("/nfs/projects/ml/data", "ro"),),
    (("/nfs/projects/vision", "rw"),),
    (("/nfs/datasets/imagenet", "ro"),),
    (("/nfs/scratch/x", "rw"),),
    (("/etc/shadow", "ro"),),
)


def token(stack: Stack, user: User, body: Any = None) -> str:
    ring = KeyRing.load(stack.keyring)
    binding = None if body is None else request_digest(parse_job_request(body).to_input())
    claims = new_claims(
        uid=user.uid,
        gid=user.gid,
        groups=user.groups,
        user=user.name,
        host="login1",
        realm=stack.realm,
        ttl=300,
        now=time.time(),
        binding=binding,
    )
    return seal(claims, ring.active)


def call(stack: Stack, user: User, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token(stack, user, body if method == 'POST' else None)}"}
    resp = requests.request(method, stack.server_url + path, json=body, headers=headers, timeout=10)
    return resp.json() if resp.content else None


def drive(stack: Stack) -> None:
    jobs: list[str] = []
    for user, project, mounts in itertools.product(CAST, PROJECTS, MOUNTS):
        body = {
            "project": project,
            "image": "busybox:1.36",
            "command": ["sleep", "60"],
            "mounts": [{"path": p, "mode": m} for p, m in mounts],
        }
        answer = call(stack, user, "POST", "/v1/jobs", body)
        if isinstance(answer, dict) and "job" in answer:
            jobs.append(answer["job"]["id"])
    for user in CAST:
        call(stack, user, "GET", "/v1/jobs")
    for user, job in itertools.product(CAST, jobs[:6]):
        call(stack, user, "GET", f"/v1/jobs/{job}")
        call(stack, user, "PUT", f"/v1/jobs/{job}/priority", {"priority": 4})
    for user, job in zip(CAST, jobs[6:10], strict=False):
        call(stack, user, "DELETE", f"/v1/jobs/{job}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="decision lines (JSON, one a line)")
    ap.add_argument("--opa", default=str(ROOT / ".tools/bin/opa"))
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tsvc-rec-", dir="/tmp"))
    stack = Stack(
        workdir=workdir,
        opa=args.opa,
        policy_paths=[str(ROOT / "policies/wsc"), str(ROOT / "policies/data")],
        realm="demo",
    )
    try:
        with stack:
            drive(stack)
        lines = stack.log("server").read_text().splitlines()
    finally:
        stack.remove()
    decisions = [line for line in lines if json.loads(line or "{}").get("event") == "decision"]
    args.out.write_text("\n".join(decisions) + "\n")
    print(f"{len(decisions)} decisions -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
