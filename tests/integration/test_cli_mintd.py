"""The `tokensvc` command line against a real daemon: exact exit codes and outputs."""

from __future__ import annotations

import json

import pytest
from usernode import REALM, A, Daemon, Tree, cli, cli_as, cli_reachable, start_daemon

pytestmark = pytest.mark.root


def test_token_then_decode(tree: Tree, mintd: Daemon) -> None:
    done = cli(tree, "token", "--socket", str(tree.socket), "--ttl", "600")
    assert (done.returncode, done.stderr) == (0, "")
    token = done.stdout.strip()
    assert done.stdout == token + "\n"
    decoded = cli(tree, "decode", "--keyring", str(tree.keyring), "-", stdin=token + "\n")
    assert decoded.returncode == 0, decoded.stderr
    claims = json.loads(decoded.stdout)
    assert (claims["uid"], claims["gid"], claims["realm"]) == (0, 0, REALM)
    assert claims["expires_at"] - claims["issued_at"] == 600
    # Decoding twice works: decode never consumes the token's replay slot.
    again = cli(tree, "decode", "--keyring", str(tree.keyring), token)
    assert again.returncode == 0


@pytest.mark.parametrize(
    ("args", "code", "stderr_start"),
    [
        (["--ttl", "3601"], 6, "tokensvc: mint daemon refused the request (ttl): ttl must be"),
        (["--ttl", "99999"], 6, "tokensvc: mint daemon refused the request (ttl)"),
        (["--ttl", "0"], 2, "usage: tokensvc token"),
        (["--ttl", "abc"], 2, "usage: tokensvc token"),
    ],
)
def test_token_refusals(
    tree: Tree, mintd: Daemon, args: list[str], code: int, stderr_start: str
) -> None:
    done = cli(tree, "token", "--socket", str(tree.socket), *args)
    assert done.returncode == code
    assert done.stdout == ""
    assert done.stderr.startswith(stderr_start)


def test_token_with_daemon_stopped_exits_5(fresh_tree: Tree) -> None:
    daemon = start_daemon(fresh_tree)
    assert daemon.stop() == 0
    done = cli(fresh_tree, "token", "--socket", str(fresh_tree.socket))
    assert done.returncode == 5
    assert done.stderr == (
        f"tokensvc: mint daemon is not running (no listener at {fresh_tree.socket})\n"
    )


def test_token_cli_as_other_user_with_settings_file(tree: Tree, mintd: Daemon) -> None:
    """A user with no options at all: the socket comes from the settings file."""
    reason = cli_reachable()
    assert not reason, reason
    conf = tree.base / "user.conf"
    conf.write_text(f'realm = "{REALM}"\nsocket = "{tree.socket}"\n')
    conf.chmod(0o644)
    done = cli_as(A, tree, "--config", str(conf), "token")
    assert done.returncode == 0, done.stderr
    decoded = cli(tree, "decode", "--keyring", str(tree.keyring), done.stdout.strip())
    assert json.loads(decoded.stdout)["uid"] == A.uid


def test_token_bound_to_a_digest_then_decode(tree: Tree, mintd: Daemon) -> None:
    digest = "0123456789abcdef" * 4
    done = cli(tree, "token", "--socket", str(tree.socket), "--bind", digest)
    assert (done.returncode, done.stderr) == (0, "")
    decoded = cli(tree, "decode", "--keyring", str(tree.keyring), done.stdout.strip())
    assert decoded.returncode == 0, decoded.stderr
    assert json.loads(decoded.stdout)["binding"] == digest
    refused = cli(tree, "token", "--socket", str(tree.socket), "--bind", digest.upper())
    assert refused.returncode == 2
    assert "--bind: must be 64 lowercase hex digits" in refused.stderr
