"""`make demo` / `make up`: the whole stack on this machine, the seed's scenarios, a clean stop.

demo: start the mint daemon, OPA (signed bundle from a local bundle server
when one was built, else the policy directories) and the server with the
spool submitter; run the scenarios -- as users A, B, C and the ml-team admin
through setpriv when run as root, else as the current user -- printing each
decision and the generated pod YAML; stop everything.

up: the same stack in the foreground until Ctrl-C, with the commands to use it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import requests
import yaml

from tokensvc.cluster.devstack import ADMIN, USER_A, USER_B, USER_C, Stack, User, setpriv
from tokensvc.cluster.jobs import parse_job_request
from tokensvc.core.digest import request_digest

ROOT = Path(__file__).resolve().parents[1]
BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = RESET = ""


def stack_for(args: argparse.Namespace) -> Stack:
    workdir = Path(tempfile.mkdtemp(prefix="tokensvc-demo-", dir=args.tmp))
    opa = args.opa or str(ROOT / ".tools" / "bin" / "opa")
    bundle = Path(args.bundle) if args.bundle else None
    if bundle is not None and not bundle.exists():
        bundle = None
    key = Path(args.verification_key) if args.verification_key else None
    return Stack(
        workdir=workdir,
        opa=opa,
        policy_paths=[str(ROOT / "policies" / "wsc"), str(ROOT / "policies" / "data")],
        bundle=bundle,
        verification_key=key,
        opa_config=ROOT / "deploy" / "opa" / "config.yaml",
        realm="demo",
    )


class Scenarios:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.root = os.geteuid() == 0
        self.me = User("you", os.getuid(), os.getgid(), tuple(os.getgroups()), "current user")

    def cli(self, user: User | None, *args: str) -> subprocess.CompletedProcess[str]:
        argv = self.stack.tokensvc(*args)
        if user is not None and self.root:
            argv = setpriv(user, argv)
        return subprocess.run(
            argv, env=self.stack.env(), capture_output=True, text=True, check=False, cwd="/"
        )

    def title(self, text: str) -> None:
        print(f"\n{BOLD}== {text}{RESET}")

    def show(self, run: subprocess.CompletedProcess[str], *, pod: bool = True) -> Any:
        if run.returncode == 0:
            doc = json.loads(run.stdout) if run.stdout.strip().startswith(("{", "[")) else None
            if isinstance(doc, dict) and "pod" in doc:
                ctx = doc["pod"]["spec"]["securityContext"]
                print(f"{GREEN}ALLOWED{RESET} decision {doc['decision_id']}")
                print(
                    f"  job {doc['job']['id']}: uid {ctx['runAsUser']} gid {ctx['runAsGroup']}"
                    f" groups {ctx['supplementalGroups']} priority {doc['job']['priority']}"
                )
                if pod:
                    print(f"{DIM}--- generated pod ---{RESET}")
                    print(yaml.safe_dump(doc["pod"], sort_keys=False), end="")
                return doc
            print(f"{GREEN}OK{RESET} {run.stdout.strip()}")
            return doc
        print(f"{RED}REFUSED{RESET} (exit {run.returncode})")
        print(run.stderr.rstrip())
        return None

    def submit(self, user: User | None, project: str, *mounts: str, **kw: str) -> Any:
        args = ["submit", "--project", project, "--image", "busybox:1.36", "-o", "json"]
        for m in mounts:
            args += ["--mount", m]
        for k, v in kw.items():
            args += [f"--{k}", v]
        return self.show(self.cli(user, *args, "--", "sleep", "3600"))

    def run(self) -> int:
        if not self.root:
            return self.run_as_current_user()
        a, b, c, admin = USER_A, USER_B, USER_C, ADMIN
        for u in (a, b, c, admin):
            print(f"  {u.name:<6} uid {u.uid} gid {u.gid} groups {list(u.groups)}  ({u.role})")

        self.title("A submits to ml-team, reading data and writing scratch")
        job = self.submit(a, "ml-team", "/nfs/projects/ml/data", "/nfs/projects/ml/scratch:rw")
        job_id = job["job"]["id"] if job else "wsc-job-" + "0" * 32

        self.title("B (not in ml-team) tries to submit as ml-team")
        self.submit(b, "ml-team", "/nfs/projects/ml/data")

        self.title("B tries to cancel A's job")
        self.show(self.cli(b, "cancel", job_id))

        self.title("B tries to raise A's job priority")
        self.show(self.cli(b, "priority", job_id, "9"))

        self.title("B lists jobs: A's job is not visible")
        self.show(self.cli(b, "jobs"))

        self.title("The ml-team admin raises A's job priority")
        self.show(self.cli(admin, "priority", job_id, "9"))

        self.title("A resends one token: the same request gets the same job, another job nothing")
        self.replay(a)

        self.title("C (ml-team, vision, students) charges a job to each of its groups")
        for project, mount in (
            ("ml-team", "/nfs/projects/ml/models:rw"),
            ("vision", "/nfs/projects/vision/runs:rw"),
            ("students", "/nfs/projects/students/c:rw"),
        ):
            print(f"{DIM}-- project {project}, mount {mount}{RESET}")
            self.submit(c, project, mount)

        self.title("C asks for too much: every reason is reported")
        self.submit(c, "students", "/etc", "/nfs/home/1002:rw", systems="8")

        self.title("root never launches")
        self.submit(None, "ml-team")

        self.title("The admin lists jobs (sees ml-team's), A cancels its own job")
        self.show(self.cli(admin, "jobs"))
        self.show(self.cli(a, "cancel", job_id))
        return 0

    def run_as_current_user(self) -> int:
        print(f"not root: running as uid {self.me.uid} only (run as root for users A, B, C)")
        self.title("You submit a job to your primary group")
        import grp  # noqa: PLC0415

        try:
            project = grp.getgrgid(os.getgid()).gr_name
        except KeyError:
            project = "ml-team"
        self.submit(self.me, project)
        self.title("Your jobs")
        self.show(self.cli(self.me, "jobs"))
        return 0

    def replay(self, user: User) -> None:
        body = {"project": "ml-team", "image": "busybox:1.36", "command": ["true"]}
        # Bound to this one request, as `tokensvc submit` binds its tokens.
        digest = request_digest(parse_job_request(body).to_input())
        token = self.cli(user, "token", "--bind", digest).stdout.strip()
        other = {**body, "command": ["sh", "-c", "something else"]}
        attempts = (("first use", body), ("same request again", body), ("another job", other))
        for attempt, sent in attempts:
            resp = requests.post(
                f"{self.stack.server_url}/v1/jobs",
                json=sent,
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            colour = GREEN if resp.status_code < 300 else RED
            error = resp.json().get("error", resp.json().get("job", {}).get("id"))
            print(f"  {attempt}: {colour}HTTP {resp.status_code}{RESET} {error}")


def up(stack: Stack) -> int:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"{BOLD}tokensvc stack is up{RESET} (work directory {stack.workdir})")
    print(f"  server  {stack.server_url}   (openapi: {stack.server_url}/openapi.json)")
    print(f"  OPA     {stack.opa_url}")
    print(f"  mintd   {stack.socket}")
    print("Use it from another shell:")
    print(f"  export TOKENSVC_CONFIG={stack.config}")
    cli = Path(sys.executable).parent / "tokensvc"
    print(f"  {cli} submit --project ml-team --image busybox -- sleep 60")
    print(f"  {cli} jobs")
    print("Ctrl-C stops everything.")
    dead = stack.watch(done)
    if dead is not None:
        print(f"{dead} exited; stopping\n{stack.tail(dead)}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--up", action="store_true", help="run the stack until Ctrl-C")
    parser.add_argument("--opa", help="opa binary (default .tools/bin/opa)")
    parser.add_argument("--bundle", help="signed bundle (.tar.gz) to serve to OPA")
    parser.add_argument("--verification-key", help="public key the bundle is signed for")
    parser.add_argument(
        "--tmp", default=tempfile.gettempdir(), help="where the work directory goes"
    )
    args = parser.parse_args()
    stack = stack_for(args)
    mode = f"signed bundle {stack.bundle}" if stack.bundle else "policy directories"
    print(f"{BOLD}starting{RESET}: mint daemon, OPA ({mode}), server (spool {stack.spool})")
    try:
        stack.start()
    except Exception:
        for name in ("opa", "mintd", "server"):
            print(f"--- {name} log ---\n{stack.tail(name)}", file=sys.stderr)
        stack.stop()
        stack.remove()
        raise
    try:
        code = up(stack) if args.up else Scenarios(stack).run()
    finally:
        # Clean up before printing anything more: a closed stdout must not
        # leave processes or files behind.
        stack.stop()
        audit = stack.tail("server", 40)
        stack.remove()
    if not args.up:
        print(f"\n{DIM}--- audit log (server) ---{RESET}\n{audit}")
    print(f"\n{BOLD}stopped{RESET}: every process ended, work directory removed")
    return code


if __name__ == "__main__":
    sys.exit(main())
