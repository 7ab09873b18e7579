"""``tokensvc server|submit|jobs|cancel|priority``: parsing and printing only.

The user-node commands mint one fresh token per request through the local
daemon (``client.mint``) and call the server at settings ``server_url``
(``$TOKENSVC_SERVER_URL`` or ``--server``). A policy denial prints every
reason, one per line, and exits 7; the other exit codes are those of
:mod:`tokensvc.core.errors` (table in docs/api.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from tokensvc.cluster.jobs import parse_job_request
from tokensvc.core.config import Settings
from tokensvc.core.errors import InvalidRequest, PolicyDenied


def _mount(text: str) -> dict[str, str]:
    path, sep, mode = text.rpartition(":")
    if not sep or mode not in ("ro", "rw"):
        path, mode = text, "ro"
    if not path.startswith("/"):
        raise argparse.ArgumentTypeError("must be an absolute path, optionally :ro or :rw")
    return {"path": path, "mode": mode}


def _non_negative(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise argparse.ArgumentTypeError("must be a whole number >= 0")
    return int(text)


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _client(settings: Settings) -> Any:
    from tokensvc.cluster.client import JobClient  # noqa: PLC0415
    from tokensvc.usernode.client import mint  # noqa: PLC0415

    return JobClient(
        settings.server_url,
        lambda: mint(socket_path=settings.socket),
        ca_file=settings.server_ca or None,
    )


def _print_denial(err: PolicyDenied) -> int:
    print("tokensvc: denied by policy:", file=sys.stderr)
    for reason in err.reasons:
        print(f"  - {reason}", file=sys.stderr)
    return err.exit_code


def _print_invalid(err: InvalidRequest) -> int:
    print("tokensvc: invalid request:", file=sys.stderr)
    for reason in err.reasons:
        print(f"  - {reason}", file=sys.stderr)
    return err.exit_code


def _job_line(job: dict[str, Any]) -> str:
    return (
        f"{job.get('id', '?'):<40} {job.get('owner_uid', '?')!s:>8} "
        f"{job.get('project', '?'):<20} {job.get('priority')!s:>8}  {job.get('phase', '?')}"
    )


def _emit(doc: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(yaml.safe_dump(doc, sort_keys=False), end="")


def _cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {
        "project": args.project,
        "image": args.image,
        "command": args.cmd,
        "mounts": args.mount,
        "resources": {"systems": args.systems},
    }
    if args.priority is not None:
        body["priority"] = args.priority
    try:
        request = parse_job_request(body)  # report mistakes before minting a token
        with _client(settings) as client:
            done = client.submit(request)
    except PolicyDenied as err:
        return _print_denial(err)
    except InvalidRequest as err:
        return _print_invalid(err)
    if args.output != "text":
        _emit(done, args.output)
        return 0
    job, pod = done["job"], done.get("pod", {})
    ctx = pod.get("spec", {}).get("securityContext", {})
    print(f"submitted {job['id']}")
    print(
        f"  runs as uid {ctx.get('runAsUser')} gid {ctx.get('runAsGroup')}"
        f" groups {ctx.get('supplementalGroups')} in project {job['project']},"
        f" priority {job['priority']}"
    )
    for m in pod.get("spec", {}).get("containers", [{}])[0].get("volumeMounts", []):
        print(f"  mount {m['mountPath']} ({'ro' if m.get('readOnly') else 'rw'})")
    print(f"  decision {done.get('decision_id')}")
    return 0


def _cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with _client(settings) as client:
            jobs = client.list()
    except PolicyDenied as err:
        return _print_denial(err)
    if args.output != "text":
        _emit(jobs, args.output)
        return 0
    print(f"{'ID':<40} {'OWNER':>8} {'PROJECT':<20} {'PRIORITY':>8}  PHASE")
    for job in jobs:
        print(_job_line(job))
    return 0


def _cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with _client(settings) as client:
            done = client.cancel(args.job_id)
    except PolicyDenied as err:
        return _print_denial(err)
    print(f"cancelled {done['job']['id']}")
    return 0


def _cmd_priority(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with _client(settings) as client:
            done = client.set_priority(args.job_id, args.priority)
    except PolicyDenied as err:
        return _print_denial(err)
    print(f"{done['job']['id']} priority {done['job']['priority']}")
    return 0


def _cmd_server(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.cluster.app import serve  # noqa: PLC0415 (uvicorn only here)

    serve(settings)
    return 0


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    import shutil  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    import threading  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from tokensvc.cluster.devstack import Stack  # noqa: PLC0415

    policies = args.policy or [p for p in ("policies/wsc", "policies/data") if Path(p).is_dir()]
    stack = Stack(
        workdir=Path(tempfile.mkdtemp(prefix="tokensvc-up-")),
        opa=args.opa or shutil.which("opa") or ".tools/bin/opa",
        policy_paths=[str(Path(p).resolve()) for p in policies],
        bundle=Path(args.bundle).resolve() if args.bundle else None,
        verification_key=Path(args.verification_key).resolve() if args.verification_key else None,
        opa_config=Path(args.opa_config).resolve(),
        realm=settings.realm,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack.start()
        print(f"server {stack.server_url}  OPA {stack.opa_url}  mint socket {stack.socket}")
        print(f"clients: export TOKENSVC_CONFIG={stack.config}; Ctrl-C stops everything")
        dead = stack.watch(stop)
        if dead is not None:
            print(f"tokensvc: {dead} exited:\n{stack.tail(dead)}", file=sys.stderr)
    finally:
        stack.stop()
        stack.remove()
    return 0 if dead is None else 1


def _output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", choices=("text", "json", "yaml"), default="text", help="output format"
    )


def add_job_commands(sub: Any) -> None:
    """Subcommands of the cluster side (server) and of the user-node job client."""
    p = sub.add_parser("server", help="run the cluster management server (foreground)")
    _keyring_option_like(p)
    p.add_argument("--bind", metavar="ADDR", help="listen address (default: settings)")
    p.add_argument("--port", type=_non_negative, metavar="PORT", help="listen port")
    p.add_argument("--opa-url", metavar="URL", help="OPA REST API, e.g. http://127.0.0.1:8181")
    p.add_argument("--submitter", choices=("spool", "kubernetes"), help="where pods go")
    p.add_argument("--spool-dir", metavar="DIR", help="spool directory (spool submitter)")
    p.add_argument("--realm", help="realm tokens must carry (default: settings 'realm')")
    p.set_defaults(func=_cmd_server)

    p = sub.add_parser("up", help="run mint daemon + OPA + server here, until Ctrl-C (demo)")
    p.add_argument("--opa", metavar="PATH", help="opa binary (default: on PATH)")
    p.add_argument(
        "--policy", action="append", metavar="DIR", help="policy/data dir (default: policies/…)"
    )
    p.add_argument("--bundle", metavar="FILE", help="signed bundle to serve to OPA instead")
    p.add_argument("--verification-key", metavar="PEM", help="public key the bundle is signed for")
    p.add_argument(
        "--opa-config",
        default="deploy/opa/config.yaml",
        metavar="FILE",
        help="OPA configuration used with --bundle (default deploy/opa/config.yaml)",
    )
    p.set_defaults(func=_cmd_up)

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        cp: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        cp.add_argument("--server", dest="server_url", metavar="URL", help="server URL")
        cp.add_argument("--socket", metavar="PATH", help="mint daemon socket")
        return cp

    p = client_parser("submit", "submit a job: tokensvc submit --project G --image I -- CMD...")
    p.add_argument("--project", required=True, metavar="GROUP", help="group to charge and run as")
    p.add_argument("--image", required=True, metavar="IMAGE", help="container image")
    p.add_argument(
        "--mount",
        type=_mount,
        action="append",
        default=[],
        metavar="PATH[:ro|:rw]",
        help="NFS path the job needs (repeatable; read-only unless :rw)",
    )
    p.add_argument("--systems", type=_positive, default=1, metavar="N", help="systems (default 1)")
    p.add_argument("--priority", type=_non_negative, metavar="P", help="requested priority")
    _output_option(p)
    p.add_argument("cmd", nargs="+", metavar="CMD", help="command to run (after --)")
    p.set_defaults(func=_cmd_submit)

    p = client_parser("jobs", "list the jobs you may see")
    _output_option(p)
    p.set_defaults(func=_cmd_jobs)

    p = client_parser("cancel", "cancel a job")
    p.add_argument("job_id", metavar="ID")
    p.set_defaults(func=_cmd_cancel)

    p = client_parser("priority", "set a job's priority")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("priority", type=_non_negative, metavar="P")
    p.set_defaults(func=_cmd_priority)


def _keyring_option_like(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keyring", metavar="PATH", help="key ring file (default: settings 'keyring')"
    )


# Options above that override a setting: option name -> Settings path (see cli._settings).
OVERRIDES: dict[str, tuple[str, ...]] = {
    "bind": ("server", "bind"),
    "port": ("server", "port"),
    "opa_url": ("server", "opa_url"),
    "submitter": ("server", "submitter"),
    "spool_dir": ("server", "spool_dir"),
    "server_url": ("server_url",),
}

__all__ = ["OVERRIDES", "add_job_commands"]
