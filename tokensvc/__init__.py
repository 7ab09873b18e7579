"""tokensvc: kernel-attested identity tokens and OPA-backed authorization.

A small facade: the error tree is imported eagerly (it is tiny); ``mint``
and the token types load on first use, so ``import tokensvc`` stays cheap
for the mint daemon and CLI (nothing here pulls in kubernetes, requests or
the HTTP server).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from tokensvc.errors import (
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

if TYPE_CHECKING:
    from tokensvc.claims import Claims
    from tokensvc.client import mint
    from tokensvc.config import Settings, load_settings
    from tokensvc.keys import KeyRing
    from tokensvc.validate import TokenValidator

__version__ = "0.1.0"

_LAZY = {
    "Claims": "tokensvc.claims",
    "KeyRing": "tokensvc.keys",
    "Settings": "tokensvc.config",
    "TokenValidator": "tokensvc.validate",
    "load_settings": "tokensvc.config",
    "mint": "tokensvc.client",
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
