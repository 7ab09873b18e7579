"""``tokensvc submit|jobs|job|logs|cancel|priority``: parsing and printing only.

The user-node commands mint one fresh token per request through the local
daemon (``usernode.client.mint``), bound to that request where it has a
digest (submit: the parsed request's ``to_input()``; job, logs, cancel and
priority: ``core.digest.action_digest``), and call the server at settings
``server_url`` (``$TOKENSVC_SERVER_URL`` or ``--server``). A refusal prints
every reason, one per line, and exits with the code of the server's error
(the table in core.errors; docs/api.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tokensvc.cli.common import non_negative, positive, print_reasons
from tokensvc.core.errors import InvalidRequest, PolicyDenied

if TYPE_CHECKING:
    from tokensvc.core.config import Settings


def _mount(text: str) -> dict[str, str]:
    path, sep, mode = text.rpartition(":")
    if not sep or mode not in ("ro", "rw"):
        path, mode = text, "ro"
    if not path.startswith("/"):
        raise argparse.ArgumentTypeError("must be an absolute path, optionally :ro or :rw")
    return {"path": path, "mode": mode}


def _client(settings: Settings, *, bind: str | None = None) -> Any:
    """A JobClient whose tokens are bound to ``bind`` (one client per request)."""
    from tokensvc.cluster.client import JobClient  # noqa: PLC0415
    from tokensvc.usernode.client import mint  # noqa: PLC0415

    return JobClient(
        settings.server_url,
        lambda: mint(socket_path=settings.socket, bind=bind),
        ca_file=settings.server_ca or None,
    )


def _print_denial(err: PolicyDenied) -> int:
    return print_reasons("denied by policy", err.reasons, err.exit_code)


def _print_invalid(err: InvalidRequest) -> int:
    return print_reasons("invalid request", err.reasons, err.exit_code)


def _job_line(job: dict[str, Any]) -> str:
    exit_code = job.get("exit_code")
    return (
        f"{job.get('id', '?'):<40} {job.get('owner_uid', '?')!s:>8} "
        f"{job.get('project', '?'):<20} {job.get('priority')!s:>8}  {job.get('phase', '?'):<10}"
        f" {'-' if exit_code is None else exit_code!s:>4}"
    ).rstrip()


# What `tokensvc job` prints, in this order: (field of the job, label).
_JOB_FIELDS = (
    ("id", "job"),
    ("owner_uid", "owner uid"),
    ("project", "project"),
    ("priority", "priority"),
    ("phase", "phase"),
    ("exit_code", "exit code"),
    ("reason", "reason"),
    ("created", "created"),
    ("started", "started"),
    ("finished", "finished"),
    ("token_id", "token id"),
    ("decision_id", "decision"),
)


def _emit(doc: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        import yaml  # noqa: PLC0415 - only for -o yaml

        print(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), end="")


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
    from tokensvc.cluster.jobs import parse_job_request  # noqa: PLC0415
    from tokensvc.core.digest import request_digest  # noqa: PLC0415

    try:
        request = parse_job_request(body)  # report mistakes before minting a token
        # The server digests the request it parsed the same way: the token is
        # good for this request only.
        with _client(settings, bind=request_digest(request.to_input())) as client:
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
    print(f"{'ID':<40} {'OWNER':>8} {'PROJECT':<20} {'PRIORITY':>8}  {'PHASE':<10} {'EXIT':>4}")
    for job in jobs:
        print(_job_line(job))
    return 0


def _cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.core.digest import action_digest  # noqa: PLC0415

    try:
        with _client(settings, bind=action_digest("get", args.job_id)) as client:
            done = client.get(args.job_id)
    except PolicyDenied as err:
        return _print_denial(err)
    job = done.get("job", {})
    if args.output != "text":
        _emit(job, args.output)
        return 0
    for key, label in _JOB_FIELDS:
        value = job.get(key)
        print(f"{label + ':':<12} {'-' if value is None or value == '' else value}")
    return 0


def _cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.core.digest import action_digest  # noqa: PLC0415

    out = sys.stdout.buffer
    try:
        with _client(settings, bind=action_digest("logs", args.job_id)) as client:
            for chunk in client.logs(args.job_id, follow=args.follow):
                out.write(chunk)
                out.flush()  # each chunk as it arrives: the job's lines, as they are printed
    except PolicyDenied as err:
        return _print_denial(err)
    return 0


def _cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.core.digest import action_digest  # noqa: PLC0415

    try:
        with _client(settings, bind=action_digest("cancel", args.job_id)) as client:
            done = client.cancel(args.job_id)
    except PolicyDenied as err:
        return _print_denial(err)
    print(f"cancelled {done['job']['id']}")
    return 0


def _cmd_priority(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.core.digest import action_digest  # noqa: PLC0415

    bind = action_digest("set_priority", args.job_id, priority=args.priority)
    try:
        with _client(settings, bind=bind) as client:
            done = client.set_priority(args.job_id, args.priority)
    except PolicyDenied as err:
        return _print_denial(err)
    print(f"{done['job']['id']} priority {done['job']['priority']}")
    return 0


def _output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", choices=("text", "json", "yaml"), default="text", help="output format"
    )


def add_commands(sub: Any) -> None:
    """The user-node job client: submit, jobs, job, logs, cancel, priority."""

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
    p.add_argument("--systems", type=positive, default=1, metavar="N", help="systems (default 1)")
    p.add_argument("--priority", type=non_negative, metavar="P", help="requested priority")
    _output_option(p)
    p.add_argument("cmd", nargs="+", metavar="CMD", help="command to run (after --)")
    p.set_defaults(func=_cmd_submit)

    p = client_parser("jobs", "list the jobs you may see")
    _output_option(p)
    p.set_defaults(func=_cmd_jobs)

    p = client_parser("job", "show one job in full: phase, exit code, times, decision")
    p.add_argument("job_id", metavar="ID")
    _output_option(p)
    p.set_defaults(func=_cmd_job)

    p = client_parser("logs", "print a job's output (what its command wrote)")
    p.add_argument("job_id", metavar="ID")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing as the job writes, until its container ends",
    )
    p.set_defaults(func=_cmd_logs)

    p = client_parser("cancel", "cancel a job")
    p.add_argument("job_id", metavar="ID")
    p.set_defaults(func=_cmd_cancel)

    p = client_parser("priority", "set a job's priority")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("priority", type=non_negative, metavar="P")
    p.set_defaults(func=_cmd_priority)


__all__ = ["add_commands"]
