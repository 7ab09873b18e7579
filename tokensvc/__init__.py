"""tokensvc: kernel-attested identity tokens and OPA-backed authorization.

A small facade: the error tree is imported eagerly (it is tiny); ``mint``
and the token types load on first use, so ``import tokensvc`` stays cheap
for the mint daemon and CLI (nothing here pulls in kubernetes, requests or
the HTTP server).
"""

from __future__ import annotations

from importlib import import_module

from tokensvc.core.errors import (
    ConfigError,
    DaemonUnavailable,
    Expired,
    InsecureKeyFile,
    InvalidToken,
    KeyFileError,
    KeyRetired,
    MintRefused,
    NotFound,
    NotYetValid,
    PolicyDenied,
    PolicyUnavailable,
    Replayed,
    ServerUnavailable,
    TokenRejected,
    TokenServiceError,
    WrongRealm,
)

# Not `from typing import TYPE_CHECKING`: `tokensvc token` starts without importing typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tokensvc.core.claims import Claims
    from tokensvc.core.config import Settings, load_settings
    from tokensvc.core.keys import KeyRing
    from tokensvc.core.validate import TokenValidator
    from tokensvc.usernode.client import mint

__version__ = "0.1.0"

_LAZY = {
    "Claims": "tokensvc.core.claims",
    "KeyRing": "tokensvc.core.keys",
    "Settings": "tokensvc.core.config",
    "TokenValidator": "tokensvc.core.validate",
    "load_settings": "tokensvc.core.config",
    "mint": "tokensvc.usernode.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tokensvc' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Claims",
    "ConfigError",
    "DaemonUnavailable",
    "Expired",
    "InsecureKeyFile",
    "InvalidToken",
    "KeyFileError",
    "KeyRetired",
    "KeyRing",
    "MintRefused",
    "NotFound",
    "NotYetValid",
    "PolicyDenied",
    "PolicyUnavailable",
    "Replayed",
    "ServerUnavailable",
    "Settings",
    "TokenRejected",
    "TokenServiceError",
    "TokenValidator",
    "WrongRealm",
    "__version__",
    "load_settings",
    "mint",
]
