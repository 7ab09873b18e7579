"""Settings: defaults < file < environment, typed and validated with clear ConfigErrors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tokensvc.core.config import (
    DEFAULT_KEYRING,
    DEFAULT_SOCKET,
    MintdSettings,
    Settings,
    load_settings,
    settings_replace,
)
from tokensvc.core.errors import ConfigError

NO_FILE: dict[str, str] = {"TOKENSVC_CONFIG": "/nonexistent/tokensvc.conf"}


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tokensvc.conf"
    path.write_text(text)
    return str(path)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(_file(tmp_path, ""), env={})
    assert settings == Settings()
    assert settings.socket == DEFAULT_SOCKET == "/run/tokensvc/mint.sock"
    assert settings.keyring == DEFAULT_KEYRING == "/etc/tokensvc/keyring"
    assert (settings.default_ttl, settings.max_ttl, settings.max_skew) == (300, 3600, 60)
    assert settings.mintd == MintdSettings()


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().realm = "x"  # type: ignore[misc]


def test_file_then_environment(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        'realm = "wsc"\nsocket = "/run/x/mint.sock"\nmax_ttl = 600\n'
        '[mintd]\nuser = "tokensvc"\ntimeout = 2\nmax_connections = 10\n',
    )
    settings = load_settings(path, env={})
    assert settings.realm == "wsc"
    assert settings.socket == "/run/x/mint.sock"
    assert settings.max_ttl == 600
    assert settings.mintd == MintdSettings(user="tokensvc", max_connections=10, timeout=2.0)
    env = {
        "TOKENSVC_REALM": "other",
        "TOKENSVC_MAX_TTL": "900",
        "TOKENSVC_MINTD_TIMEOUT": "0.5",
        "TOKENSVC_MINTD_USER": "60010",
        "TOKENSVC_K8S_SCHEMA_VERSION": "1.34",  # someone else's variable: ignored
    }
    settings = load_settings(path, env=env)
    assert (settings.realm, settings.max_ttl) == ("other", 900)
    assert settings.mintd.timeout == 0.5 and settings.mintd.user == "60010"
    assert settings.socket == "/run/x/mint.sock"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = _file(tmp_path, 'realm = "fromenv"\n')
    assert load_settings(env={"TOKENSVC_CONFIG": path}).realm == "fromenv"


def test_missing_default_file_is_fine_but_missing_explicit_file_is_not(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read settings file .*No such file"):
        load_settings(str(tmp_path / "nope.conf"), env={})
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(env=NO_FILE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("realm = \n", "is not valid TOML"),
        ("relm = 'typo'\n", "unknown setting 'relm'"),
        ("[mintd]\nusr = 'x'\n", r"\[mintd\]: unknown setting 'usr'"),
        ("max_ttl = '600'\n", "max_ttl: expected an integer"),
        ("max_ttl = true\n", "max_ttl: expected an integer"),
        ("max_ttl = 1.5\n", "max_ttl: expected an integer"),
        ("mintd = 3\n", r"\[mintd\] must be a table"),
        ("default_ttl = 0\n", "default_ttl must be in 1..3600"),
        ("default_ttl = 4000\n", "default_ttl must be in 1..3600"),
        ("max_ttl = 100000\n", "max_ttl must be in 1..86400"),
        ("socket = 'relative.sock'\n", "socket must be an absolute path"),
        ("socket = '/" + "x" * 120 + "'\n", "at most 107 bytes"),
        ("keyring = 'keys'\n", "keyring must be an absolute path"),
        ("realm = ''\n", "realm must be 1..255 bytes"),
        ('realm = "a\\tb"\n', "realm must be 1..255 bytes of printable text"),
        ("[mintd]\ntimeout = 0\n", "timeout must be in 0.01..60"),
        ("[mintd]\nmax_connections = 0\n", "max_connections must be in 1..65536"),
        ("[mintd]\nuser = 'a b'\n", "user must be a user name or a numeric uid"),
    ],
)
def test_invalid_files(tmp_path: Path, text: str, message: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(path, env={})
    assert path in str(info.value) or "TOML" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TOKENSVC_MAX_TTL", "abc", "environment TOKENSVC_MAX_TTL: expected an integer, got 'abc'"),
        ("TOKENSVC_MAX_TTL", " 600", "expected an integer"),
        ("TOKENSVC_MAX_TTL", "6e2", "expected an integer"),
        ("TOKENSVC_MINTD_TIMEOUT", "soon", "expected a number, got 'soon'"),
        ("TOKENSVC_MINTD_TIMEOUT", "-1", "expected a number"),
        ("TOKENSVC_DEFAULT_TTL", "0", "default_ttl must be in 1..3600"),
        ("TOKENSVC_SOCKET", "mint.sock", "socket must be an absolute path"),
    ],
)
def test_invalid_environment(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_file(tmp_path, ""), env={name: value})


def test_oversized_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "# " + "x" * 70000 + "\n")
    with pytest.raises(ConfigError, match="larger than 65536 bytes"):
        load_settings(path, env={})


def test_replace_validates() -> None:
    settings = settings_replace(Settings(), socket="/run/a.sock")
    assert settings.socket == "/run/a.sock"
    with pytest.raises(ConfigError, match="socket must be an absolute path"):
        settings_replace(settings, socket="a.sock")
    with pytest.raises(ConfigError, match="user must be"):
        settings_replace(settings.mintd, user="bad user")
