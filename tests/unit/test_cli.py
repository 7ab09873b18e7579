"""The command line: exact exit codes and messages (no daemon needed here).

Commands run in-process through ``cli.main``; the daemon-facing ones are in
tests/integration/test_cli_mintd.py.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from tokensvc.cli import main
from tokensvc.core.claims import new_claims
from tokensvc.core.keys import KeyRing, generate_keyring
from tokensvc.core.token import seal

REALM = "clitest"


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("TOKENSVC_"):
            monkeypatch.delenv(name)
    config = tmp_path / "tokensvc.conf"
    config.write_text(f'realm = "{REALM}"\n')
    monkeypatch.setenv("TOKENSVC_CONFIG", str(config))
    return config


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    path = keys / "keyring"
    generate_keyring(path)
    return path


def _token(keyring: Path, *, now: float | None = None, ttl: int = 300, realm: str = REALM) -> str:
    ring = KeyRing.load(keyring)
    claims = new_claims(
        uid=1001,
        gid=1001,
        groups=(2001, 2002),
        user="alice",
        host="node1",
        realm=realm,
        ttl=ttl,
        now=time.time() if now is None else now,
    )
    return seal(claims, ring.active)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# --- usage errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nonsense"],
        ["token", "--ttl", "abc"],
        ["token", "--ttl", "0"],
        ["token", "--ttl", "-5"],
        ["token", "--ttl", "100000"],
        ["token", "--ttl", " 30"],
        ["token", "--ttl", "٣"],  # a non-ASCII digit
        ["token", "--timeout", "0"],
        ["keys"],
        ["keys", "retire"],
        ["decode"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "usage: tokensvc" in err


def test_daemon_down_exits_5(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sock = tmp_path / "nobody.sock"
    code, out, err = _run(capsys, "token", "--socket", str(sock))
    assert (code, out) == (5, "")
    assert err == f"tokensvc: mint daemon is not running (no listener at {sock})\n"


def test_socket_from_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = tmp_path / "env.sock"
    monkeypatch.setenv("TOKENSVC_SOCKET", str(sock))
    code, _, err = _run(capsys, "token")
    assert code == 5
    assert str(sock) in err


# --- keygen and keys --------------------------------------------------------------------------


def test_keygen_creates_a_0600_ring_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = tmp_path / "k"
    keys.mkdir(mode=0o700)
    path = keys / "ring"
    code, out, err = _run(capsys, "keygen", "--keyring", str(path))
    assert (code, err) == (0, "")
    key_id = KeyRing.load(path).active.key_id
    assert out == f"created key ring {path} with active key {key_id}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, out, err = _run(capsys, "keygen", "--keyring", str(path))
    assert (code, out) == (3, "")
    assert err == f"tokensvc: key ring {path} already exists; not overwriting it\n"


def test_keygen_refuses_an_insecure_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = tmp_path / "open"
    keys.mkdir()
    keys.chmod(0o777)
    code, _, err = _run(capsys, "keygen", "--keyring", str(keys / "ring"))
    assert code == 4
    assert err.startswith(f"tokensvc: directory {keys} (holding key ring")
    assert not (keys / "ring").exists()


def test_keys_life_cycle(capsys: pytest.CaptureFixture[str], keyring: Path) -> None:
    first = KeyRing.load(keyring).active.key_id
    k = ["keys", "--keyring", str(keyring)]

    code, out, _ = _run(capsys, *k, "add")
    assert code == 0
    added = KeyRing.load(keyring).keys[-1]
    assert added.state == "accepted" and added.key_id in out

    code, out, _ = _run(capsys, *k, "rotate", added.key_id)
    assert (code, out) == (0, f"active key is now {added.key_id}\n")

    code, out, _ = _run(capsys, *k, "rotate")
    newest = KeyRing.load(keyring).active.key_id
    assert (code, out) == (0, f"active key is now {newest}\n")

    code, out, _ = _run(capsys, *k, "retire", first)
    assert (code, out) == (0, f"retired key {first}\n")

    code, _, err = _run(capsys, *k, "retire", newest)
    assert code == 3
    assert err == f"tokensvc: key {newest} is the active key; rotate before retiring it\n"

    code, _, err = _run(capsys, *k, "retire", "0123456789abcdef")
    assert code == 3
    assert err == "tokensvc: no key with id '0123456789abcdef' in the key ring\n"

    code, out, _ = _run(capsys, *k, "list", "--json")
    assert code == 0
    listing = json.loads(out)
    assert [(e["key_id"], e["state"]) for e in listing] == [
        (first, "retired"),
        (added.key_id, "accepted"),
        (newest, "active"),
    ]

    code, out, _ = _run(capsys, *k, "list")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "KEY",
        "ID",
        "STATE",
        "CREATED",
        "NOT",
        "BEFORE",
        "NOT",
        "AFTER",
    ]
    assert len(out.splitlines()) == 4
    for line in out.splitlines():
        assert len(line) < 100  # never a secret

    code, out, _ = _run(capsys, *k, "remove", first)
    assert (code, out) == (0, f"removed key {first}\n")


def test_keys_windows_are_set_listed_and_warned_about(
    capsys: pytest.CaptureFixture[str], keyring: Path
) -> None:
    k = ["keys", "--keyring", str(keyring)]
    active = KeyRing.load(keyring).active.key_id
    now = int(time.time())
    code, out, _ = _run(
        capsys, *k, "add", "--not-before", "2026-01-01T00:00:00Z", "--not-after", str(now + 86400)
    )
    assert code == 0
    added = KeyRing.load(keyring).keys[-1]
    assert (added.not_before, added.not_after) == (1767225600, now + 86400)

    code, out, err = _run(capsys, *k, "list")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith(added.key_id))
    assert "2026-01-01T00:00:00Z" in row
    assert err.startswith(f"tokensvc: warning: key {added.key_id} (accepted) expires in 1.0 days")
    code, _, err = _run(capsys, *k, "list", "--warn-days", "0")
    assert (code, err) == (0, "")

    code, out, _ = _run(capsys, *k, "window", active, "--not-after", str(now - 1))
    assert code == 0 and out.startswith(f"key {active} valid from - to ")
    code, out, err = _run(capsys, *k, "list", "--json")
    entry = next(e for e in json.loads(out) if e["key_id"] == active)
    assert (entry["not_before"], entry["not_after"]) == (None, now - 1)
    assert f"key {active} (active) expired at" in err
    assert "nothing can mint now" in err

    code, _, err = _run(capsys, *k, "add", "--not-before", "5", "--not-after", "5")
    assert code == 3 and "not_after must be later than not_before" in err
    for bad in ("yesterday", "2026-01-01T00:00:00"):
        code, _, err = _run(capsys, *k, "add", "--not-after", bad)
        assert code == 2 and "--not-after" in err


def test_keys_list_refuses_an_insecure_ring(
    capsys: pytest.CaptureFixture[str], keyring: Path
) -> None:
    keyring.chmod(0o644)
    code, out, err = _run(capsys, "keys", "--keyring", str(keyring), "list")
    assert (code, out) == (4, "")
    assert err == (
        f"tokensvc: key ring {keyring} is insecure: readable or writable by group (perms=0644)\n"
    )


# --- decode -----------------------------------------------------------------------------------


def test_decode_prints_claims(capsys: pytest.CaptureFixture[str], keyring: Path) -> None:
    token = _token(keyring)
    code, out, err = _run(capsys, "decode", "--keyring", str(keyring), token)
    assert (code, err) == (0, "")
    claims = json.loads(out)
    assert claims["uid"] == 1001 and claims["groups"] == [2001, 2002]
    assert claims["realm"] == REALM
    assert claims["key_id"] == KeyRing.load(keyring).active.key_id
    # Decoding does not use the token up: it decodes again.
    assert _run(capsys, "decode", "--keyring", str(keyring), token)[0] == 0


def test_decode_reads_stdin(
    capsys: pytest.CaptureFixture[str], keyring: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io  # noqa: PLC0415

    monkeypatch.setattr("sys.stdin", io.StringIO(_token(keyring) + "\n"))
    code, out, _ = _run(capsys, "decode", "--keyring", str(keyring), "-")
    assert code == 0 and json.loads(out)["uid"] == 1001


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda k: "not-a-token", 10, "tokensvc: invalid token\n"),
        (lambda k: _token(k)[:-2], 10, "tokensvc: invalid token\n"),
        (lambda k: _token(k, now=time.time() - 1000), 11, None),
        (lambda k: _token(k, now=time.time() + 1000), 12, None),
        (lambda k: _token(k, realm="elsewhere"), 13, None),
    ],
    ids=["garbage", "truncated", "expired", "not-yet-valid", "wrong-realm"],
)
def test_decode_failures_have_their_own_exit_codes(
    capsys: pytest.CaptureFixture[str], keyring: Path, make: object, code: int, message: str | None
) -> None:
    assert callable(make)
    token = make(keyring)
    got, out, err = _run(capsys, "decode", "--keyring", str(keyring), token)
    assert (got, out) == (code, "")
    assert err.startswith("tokensvc: ")
    if message is not None:
        assert err == message
    assert token not in err


def test_decode_with_another_realm_option(
    capsys: pytest.CaptureFixture[str], keyring: Path
) -> None:
    token = _token(keyring)
    code, _, err = _run(capsys, "decode", "--keyring", str(keyring), "--realm", "other", token)
    assert code == 13
    assert err.startswith("tokensvc: ") and "realm" in err  # wording is the core's


def test_decode_unknown_and_retired_keys(
    capsys: pytest.CaptureFixture[str], keyring: Path, tmp_path: Path
) -> None:
    token = _token(keyring)
    old = KeyRing.load(keyring).active.key_id
    k = ["keys", "--keyring", str(keyring)]
    assert _run(capsys, *k, "rotate")[0] == 0
    assert _run(capsys, *k, "retire", old)[0] == 0
    code, _, err = _run(capsys, "decode", "--keyring", str(keyring), token)
    assert code == 15
    assert err.startswith("tokensvc: ") and "retired" in err

    other_dir = tmp_path / "other"
    other_dir.mkdir(mode=0o700)
    generate_keyring(other_dir / "ring")
    code, _, err = _run(capsys, "decode", "--keyring", str(other_dir / "ring"), token)
    assert (code, err) == (10, "tokensvc: invalid token\n")


def test_decode_missing_key_ring(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "none"
    code, _, err = _run(capsys, "decode", "--keyring", str(path), "x")
    assert code == 3
    assert err == f"tokensvc: key ring {path} does not exist\n"


# --- settings errors ----------------------------------------------------------------------------


def test_bad_settings_exit_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENSVC_DEFAULT_TTL", "0")
    code, _, err = _run(capsys, "token", "--socket", str(tmp_path / "s"))
    assert code == 3
    assert "default_ttl must be in 1..3600" in err


def test_missing_explicit_config_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "absent.conf"
    code, _, err = _run(capsys, "--config", str(path), "token")
    assert code == 3
    assert err == f"tokensvc: cannot read settings file {path}: No such file or directory\n"


# --- tokens bound to the request they are sent with ----------------------------------


def test_submit_cancel_and_priority_mint_tokens_bound_to_their_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokensvc.cluster.jobs import parse_job_request  # noqa: PLC0415
    from tokensvc.core.digest import action_digest, request_digest  # noqa: PLC0415
    from tokensvc.core.errors import DaemonUnavailable  # noqa: PLC0415
    from tokensvc.usernode import client  # noqa: PLC0415

    binds: list[str | None] = []

    def fake_mint(*_args: object, bind: str | None = None, **_kw: object) -> str:
        binds.append(bind)
        raise DaemonUnavailable("stand-in daemon")  # stop before any HTTP

    monkeypatch.setattr(client, "mint", fake_mint)
    job = "wsc-job-" + "ab" * 16
    server = ["--server", "http://127.0.0.1:9"]
    argv = ["submit", *server, "--project", "p", "--image", "i", "--mount", "/nfs/p:rw"]
    assert _run(capsys, *argv, "--", "run", "x")[0] == 5
    assert _run(capsys, "cancel", *server, job)[0] == 5
    assert _run(capsys, "priority", *server, job, "7")[0] == 5
    assert _run(capsys, "jobs", *server)[0] == 5
    body = {
        "project": "p",
        "image": "i",
        "command": ["run", "x"],
        "mounts": [{"path": "/nfs/p", "mode": "rw"}],
        "resources": {"systems": 1},
    }
    assert binds == [
        request_digest(parse_job_request(body).to_input()),
        action_digest("cancel", job),
        action_digest("set_priority", job, priority=7),
        None,  # listing is not bound to anything
    ]
