"""``tokensvc server`` and ``tokensvc up``: parsing only (library: cluster.app, devstack)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from tokensvc.cli.common import keyring_option, non_negative

if TYPE_CHECKING:
    from tokensvc.core.config import Settings


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


def add_commands(sub: Any) -> None:
    """``server`` (the cluster management server) and ``up`` (the local stack)."""
    p = sub.add_parser("server", help="run the cluster management server (foreground)")
    keyring_option(p)
    p.add_argument("--bind", metavar="ADDR", help="listen address (default: settings)")
    p.add_argument("--port", type=non_negative, metavar="PORT", help="listen port")
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


__all__ = ["add_commands"]
