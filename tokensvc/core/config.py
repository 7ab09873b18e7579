"""Typed, frozen settings: a small TOML file plus ``TOKENSVC_*`` environment overrides.

Precedence (lowest first): built-in defaults, the file, the environment, and
finally explicit command-line options (applied by the caller with
``dataclasses.replace``). Everything is validated once, at start, and every
problem is a ``ConfigError`` naming the file/variable and the key.

The file (default ``/etc/tokensvc/tokensvc.conf``; ``TOKENSVC_CONFIG`` or
``--config`` name another one) holds top-level keys shared by every
component and one table per component::

    realm = "wsc"                       # TOKENSVC_REALM
    keyring = "/etc/tokensvc/keyring"   # TOKENSVC_KEYRING
    socket = "/run/tokensvc/mint.sock"  # TOKENSVC_SOCKET
    host = ""                           # TOKENSVC_HOST ("" = socket.gethostname())
    default_ttl = 300                   # TOKENSVC_DEFAULT_TTL
    max_ttl = 3600                      # TOKENSVC_MAX_TTL
    max_skew = 60                       # TOKENSVC_MAX_SKEW
    server_url = "http://127.0.0.1:8080"  # TOKENSVC_SERVER_URL (clients: submit, jobs, ...)
    server_ca = ""                      # TOKENSVC_SERVER_CA (CA bundle for an https server)

    [mintd]
    user = ""                           # TOKENSVC_MINTD_USER (drop privileges to it)
    max_connections = 1024              # TOKENSVC_MINTD_MAX_CONNECTIONS
    timeout = 1.0                       # TOKENSVC_MINTD_TIMEOUT (seconds per connection)
    workers = 1                         # TOKENSVC_MINTD_WORKERS (processes)

    [server]                            # TOKENSVC_SERVER_<KEY>; see ServerSettings
    opa_url = "http://127.0.0.1:8181"
    submitter = "spool"                 # or "kubernetes"

Adding a component's settings: write a frozen dataclass whose fields all
have defaults (str, int, float, bool or tuple[str, ...]), validate in its
``__post_init__`` by raising ValueError, and add it as a field of
``Settings`` with a default instance. Its table name is the field name and
its variables are ``TOKENSVC_<FIELD>_<KEY>``; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

from tokensvc.core.claims import MAX_TTL
from tokensvc.core.errors import ConfigError

DEFAULT_CONFIG = "/etc/tokensvc/tokensvc.conf"
DEFAULT_SOCKET = "/run/tokensvc/mint.sock"
DEFAULT_KEYRING = "/etc/tokensvc/keyring"
ENV_PREFIX = "TOKENSVC_"
CONFIG_ENV = "TOKENSVC_CONFIG"
MAX_CONFIG_SIZE = 64 * 1024  # a settings file is a few lines; refuse anything big
HARD_MAX_TTL = 24 * 3600  # upper bound an admin may raise max_ttl to

_Section = TypeVar("_Section", bound="DataclassInstance")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_INT = re.compile(r"-?[0-9]{1,18}")
_FLOAT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _check_path(name: str, value: str, *, allow_empty: bool = False) -> None:
    if value == "" and allow_empty:
        return
    if not os.path.isabs(value) or "\x00" in value:
        raise ValueError(f"{name} must be an absolute path")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}")


@dataclass(frozen=True, slots=True)
class MintdSettings:
    """The user-node mint daemon (``tokensvc mintd``)."""

    user: str = ""  # drop privileges to this user (name or numeric uid) after loading keys
    max_connections: int = 1024  # slow clients waiting at once; beyond it the oldest is dropped
    timeout: float = 1.0  # seconds a client has to send its request and read the reply
    workers: int = 1  # processes serving the socket (each one loop); >1 uses more cores

    def __post_init__(self) -> None:
        if self.user and not _NAME.fullmatch(self.user):
            raise ValueError("user must be a user name or a numeric uid")
        _check_range("max_connections", self.max_connections, 1, 65536)
        _check_range("timeout", self.timeout, 0.01, 60)
        _check_range("workers", self.workers, 1, 64)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The cluster management server (``tokensvc server``).

    No field may be named ``url`` or ``ca``: TOKENSVC_SERVER_URL and
    TOKENSVC_SERVER_CA are the clients' top-level ``server_url``/``server_ca``.
    """

    bind: str = "127.0.0.1"  # address to listen on
    port: int = 8080
    tls_cert: str = ""  # PEM certificate chain; with tls_key, serve HTTPS ("" = plain HTTP)
    tls_key: str = ""  # PEM private key of tls_cert
    opa_url: str = "http://127.0.0.1:8181"  # OPA sidecar (REST API)
    opa_timeout: float = 1.0  # seconds for a whole OPA exchange; beyond it: 503
    submitter: str = "spool"  # "spool" (embedded default) or "kubernetes"
    spool_dir: str = "/var/spool/tokensvc/jobs"
    spool_fsync: bool = True  # fsync each manifest (acknowledged jobs survive power loss)
    namespace: str = "wsc-jobs"  # Kubernetes namespace for job pods
    kubeconfig: str = ""  # "" = in-cluster service account, else ~/.kube/config
    kube_context: str = ""
    kube_timeout: float = 5.0  # seconds per Kubernetes API call
    max_body: int = 65536  # bytes; larger request bodies get 413
    threads: int = 64  # worker threads for blocking calls (submitter, audit); OPA connections
    replay_max_entries: int = 100_000
    # A gid allowed to *read* the key ring (never write): Kubernetes gives a
    # non-root pod its Secret as 0440 root:fsGroup. -1 = none (MUNGE's rule).
    keyring_trusted_gid: int = -1
    # Tokens not bound to their request (every v1 token; `tokensvc token`
    # without --bind): refused for submit unless this is set; for actions on
    # jobs (get, list, cancel, priority) accepted unless it is unset.
    allow_unbound_submit: bool = False
    allow_unbound_actions: bool = True
    # A job is created held and released once admitted; one still held after
    # hold_deadline seconds belongs to a submit that failed or stopped, and
    # the reconciler (every reconcile_interval seconds, on every replica)
    # removes it. Longer than the slowest submit (about 5 * kube_timeout).
    hold_deadline: float = 120.0
    reconcile_interval: float = 30.0
    # Shadow mode: a second OPA serving a candidate policy, asked beside every
    # decision, off the request path ("" = off); disagreements are counted.
    shadow_opa_url: str = ""
    shadow_opa_timeout: float = 1.0  # seconds per candidate exchange
    shadow_max_in_flight: int = 64  # comparisons at once; beyond: dropped (counted)

    def __post_init__(self) -> None:
        _check_range("keyring_trusted_gid", self.keyring_trusted_gid, -1, 2**32 - 2)
        if not self.bind or not self.bind.isprintable():
            raise ValueError("bind must be an address")
        _check_range("port", self.port, 0, 65535)
        if not self.opa_url.startswith(("http://", "https://")):
            raise ValueError("opa_url must be an http:// or https:// URL")
        _check_range("opa_timeout", self.opa_timeout, 0.01, 60)
        if self.shadow_opa_url and not self.shadow_opa_url.startswith(("http://", "https://")):
            raise ValueError("shadow_opa_url must be empty or an http:// or https:// URL")
        _check_range("shadow_opa_timeout", self.shadow_opa_timeout, 0.01, 60)
        _check_range("shadow_max_in_flight", self.shadow_max_in_flight, 1, 4096)
        if self.submitter not in ("spool", "kubernetes"):
            raise ValueError("submitter must be 'spool' or 'kubernetes'")
        _check_path("spool_dir", self.spool_dir)
        _check_path("tls_cert", self.tls_cert, allow_empty=True)
        _check_path("tls_key", self.tls_key, allow_empty=True)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be set together")
        _check_path("kubeconfig", self.kubeconfig, allow_empty=True)
        _check_range("kube_timeout", self.kube_timeout, 0.1, 300)
        _check_range("reconcile_interval", self.reconcile_interval, 0.1, 3600)
        if not 5 * self.kube_timeout < self.hold_deadline <= 86400:
            raise ValueError("hold_deadline must exceed 5 * kube_timeout (the slowest submit)")
        _check_range("max_body", self.max_body, 1024, 1 << 20)
        _check_range("threads", self.threads, 1, 1024)
        _check_range("replay_max_entries", self.replay_max_entries, 1000, 10_000_000)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything tokensvc reads from its settings file and environment."""

    realm: str = "default"  # cluster name carried in and checked on every token
    keyring: str = DEFAULT_KEYRING
    socket: str = DEFAULT_SOCKET  # mint daemon socket (daemon and clients)
    host: str = ""  # origin host written into tokens; "" = socket.gethostname()
    default_ttl: int = 300
    max_ttl: int = MAX_TTL
    max_skew: int = 60
    mintd: MintdSettings = field(default_factory=MintdSettings)
    server_url: str = "http://127.0.0.1:8080"  # where `tokensvc submit/jobs/...` send requests
    server_ca: str = ""  # CA bundle (PEM) clients trust for an https server_url ("" = system)
    server: ServerSettings = field(default_factory=ServerSettings)

    def __post_init__(self) -> None:
        if not 1 <= len(self.realm.encode()) <= 255 or not self.realm.isprintable():
            raise ValueError("realm must be 1..255 bytes of printable text")
        _check_path("keyring", self.keyring)
        _check_path("socket", self.socket)
        if len(self.socket.encode()) > 107:  # sun_path is 108 bytes with the NUL
            raise ValueError("socket path must be at most 107 bytes")
        if self.host and (len(self.host.encode()) > 255 or not self.host.isprintable()):
            raise ValueError("host must be at most 255 bytes of printable text")
        _check_range("max_ttl", self.max_ttl, 1, HARD_MAX_TTL)
        _check_range("default_ttl", self.default_ttl, 1, self.max_ttl)
        _check_range("max_skew", self.max_skew, 0, 3600)
        if not self.server_url.startswith(("http://", "https://")):
            raise ValueError("server_url must be an http:// or https:// URL")
        _check_path("server_ca", self.server_ca, allow_empty=True)


# --- loading --------------------------------------------------------------------


def _field_types(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def _from_toml(tp: Any, value: object, where: str) -> object:
    """Check a TOML value against the field type (TOML is already typed)."""
    if tp is float and type(value) is int:
        return float(value)
    if tp in (str, int, float, bool) and type(value) is tp:
        return value
    if (
        typing.get_origin(tp) is tuple
        and isinstance(value, list)
        and all(type(v) is str for v in value)
    ):
        return tuple(value)
    raise ConfigError(f"{where}: expected {_type_name(tp)}")


def _from_env(tp: Any, text: str, where: str) -> object:
    """Convert an environment string strictly (no whitespace, no surprises)."""
    if tp is str:
        return text
    if tp is int and _INT.fullmatch(text):
        return int(text)
    if tp is float and _FLOAT.fullmatch(text):
        return float(text)
    if tp is bool and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    if typing.get_origin(tp) is tuple:
        return tuple(part for part in text.split(",") if part)
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {text[:40]!r}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "a list of strings"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(
        tp, str(tp)
    )


def _build(
    cls: type[Any],
    table: Mapping[str, object],
    env: Mapping[str, str],
    env_prefix: str,
    where: str,
) -> Any:
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            raise ConfigError(f"{where}: unknown setting {key!r}")
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, types.UnionType):  # not used yet; keep the loader honest
            raise TypeError(f"unsupported settings type for {f.name}")
        if _is_section(tp):
            sub = table.get(f.name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{where}: [{f.name}] must be a table")
            values[f.name] = _build(
                tp, sub, env, f"{env_prefix}{f.name.upper()}_", f"{where} [{f.name}]"
            )
            continue
        if f.name in table:
            values[f.name] = _from_toml(tp, table[f.name], f"{where}: {f.name}")
        var = f"{env_prefix}{f.name.upper()}"
        if var in env:
            values[f.name] = _from_env(tp, env[var], f"environment {var}")
    try:
        return cls(**values)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_SIZE + 1)
    except OSError as err:
        raise ConfigError(f"cannot read settings file {path}: {err.strerror}") from None
    if len(data) > MAX_CONFIG_SIZE:
        raise ConfigError(f"settings file {path} is larger than {MAX_CONFIG_SIZE} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"settings file {path} is not valid TOML: {err}") from None


def load_settings(path: str | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Defaults < file < ``TOKENSVC_*`` environment, validated.

    ``path`` (or ``$TOKENSVC_CONFIG``) must exist when given; the default
    file is optional so a node works with environment variables alone.
    """
    env = os.environ if env is None else env
    explicit = path if path is not None else env.get(CONFIG_ENV) or None
    file_path = explicit or DEFAULT_CONFIG
    table: dict[str, Any] = {}
    if explicit is not None or os.path.exists(file_path):
        table = _read_file(file_path)
    settings: Settings = _build(Settings, table, env, ENV_PREFIX, file_path)
    return settings


def settings_replace(settings: _Section, **changes: Any) -> _Section:
    """``dataclasses.replace`` that reports invalid values as ConfigError (CLI options)."""
    try:
        return dataclasses.replace(settings, **changes)
    except ValueError as err:
        raise ConfigError(str(err)) from None


__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_KEYRING",
    "DEFAULT_SOCKET",
    "MintdSettings",
    "ServerSettings",
    "Settings",
    "load_settings",
    "settings_replace",
]
