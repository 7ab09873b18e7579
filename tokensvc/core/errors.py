"""One exception tree for the whole service, each class with a stable exit code.

The CLIs exit with ``err.exit_code`` and tests assert the exact code (MUNGE's
single error enumeration). ``InvalidToken`` is deliberately opaque: every
failure before authentication (encoding, version, length, unknown key id,
tag) raises it with no message, so a token's holder learns nothing about why.
The post-authentication failures below it are only raised once the token is
known to be genuine.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own code for bad command lines


class TokenServiceError(Exception):
    """Root of every error tokensvc raises on purpose."""

    exit_code = 1


class ConfigError(TokenServiceError):
    """Settings, files or arguments that cannot be used as given."""

    exit_code = 3


class KeyFileError(TokenServiceError):
    """A key ring file is missing, malformed, or its state change is not allowed."""

    exit_code = 3


class InsecureKeyFile(KeyFileError):
    """A key ring file or one of its parent directories is not safe to trust."""

    exit_code = 4


class DaemonUnavailable(TokenServiceError):
    """The mint daemon could not be reached or broke off the exchange."""

    exit_code = 5


class MintRefused(TokenServiceError):
    """The mint daemon refused the request (for example a TTL out of range)."""

    exit_code = 6


class PolicyDenied(TokenServiceError):
    """Policy denied the request; ``reasons`` says why."""

    exit_code = 7

    def __init__(self, reasons: list[str] | tuple[str, ...]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(self.reasons) or "denied by policy")


class PolicyUnavailable(TokenServiceError):
    """OPA could not give a usable decision; the request is refused (fail closed)."""

    exit_code = 8


class ServerUnavailable(TokenServiceError):
    """The cluster management server could not be reached or failed."""

    exit_code = 8


class NotFound(TokenServiceError):
    """The named job does not exist (or is not visible to the caller)."""

    exit_code = 9


class InvalidToken(TokenServiceError):
    """The token is not authentic. Deliberately says nothing more."""

    exit_code = 10

    def __init__(self) -> None:
        super().__init__("invalid token")


class TokenRejected(TokenServiceError):
    """An authentic token that must not be accepted now; subclasses say why."""

    exit_code = 10


class Expired(TokenRejected):
    """The token's expiry time has passed."""

    exit_code = 11


class NotYetValid(TokenRejected):
    """The token was issued further in the future than the allowed clock skew."""

    exit_code = 12


class WrongRealm(TokenRejected):
    """The token was minted for another cluster (realm)."""

    exit_code = 13


class Replayed(TokenRejected):
    """The token id was already used (or the replay cache cannot vouch for it)."""

    exit_code = 14


class KeyRetired(TokenRejected):
    """The token was sealed with a key that has since been retired."""

    exit_code = 15


__all__ = [
    "EXIT_OK",
    "EXIT_USAGE",
    "ConfigError",
    "DaemonUnavailable",
    "Expired",
    "InsecureKeyFile",
    "InvalidToken",
    "KeyFileError",
    "KeyRetired",
    "MintRefused",
    "NotFound",
    "NotYetValid",
    "PolicyDenied",
    "PolicyUnavailable",
    "Replayed",
    "ServerUnavailable",
    "TokenRejected",
    "TokenServiceError",
    "WrongRealm",
]
