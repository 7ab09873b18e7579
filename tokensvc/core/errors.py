"""The one error table of tokensvc: every error, its exit code, HTTP status and ``code``.

Each class carries three stable attributes:

- ``exit_code``: what every CLI exits with (tests assert the exact code);
- ``http_status``: what the server answers when this error ends a request;
- ``code``: a short machine-readable name, sent in every error body as
  ``{"code": ..., "error": ...}``; the client maps it back to the class
  (:func:`error_for_code`), so a refusal keeps its exit code across the wire.

``InvalidToken`` is deliberately opaque: every failure before authentication
(encoding, version, length, unknown key id, tag) raises it with no message,
so a token's holder learns nothing about why. The :class:`TokenRejected`
subclasses are raised only once the token is known to be genuine.

docs/api.md and docs/operations.md print this table; a test holds them equal.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own code for bad command lines


class TokenServiceError(Exception):
    """Root of every error tokensvc raises on purpose."""

    exit_code: int = 1
    http_status: int = 500
    code: str = "internal"


# --- configuration and keys (local only: never an HTTP answer) ---------------------------


class ConfigError(TokenServiceError):
    """Settings, files or arguments that cannot be used as given."""

    exit_code = 3
    code = "config"


class KeyFileError(TokenServiceError):
    """A key ring file is missing, malformed, or its state change is not allowed."""

    exit_code = 3
    code = "key_file"


class InsecureKeyFile(KeyFileError):
    """A key ring file or one of its parent directories is not safe to trust."""

    exit_code = 4
    code = "insecure_key_file"


# --- the mint daemon -----------------------------------------------------------------------


class DaemonUnavailable(TokenServiceError):
    """The mint daemon could not be reached or broke off the exchange."""

    exit_code = 5
    code = "daemon_unavailable"


class MintRefused(TokenServiceError):
    """The mint daemon refused the request (for example a TTL out of range)."""

    exit_code = 6
    code = "mint_refused"


# --- requests to the cluster server --------------------------------------------------------


class InvalidRequest(TokenServiceError, ValueError):
    """A request that does not match the schema; ``reasons`` lists every problem."""

    exit_code = 2
    http_status = 422
    code = "invalid_request"

    def __init__(self, reasons: list[str] | tuple[str, ...]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(self.reasons))


class MalformedBody(InvalidRequest):
    """The body is not JSON (or not UTF-8)."""

    http_status = 400
    code = "malformed_body"


class BodyTooLarge(InvalidRequest):
    """The body is larger than the server accepts."""

    http_status = 413
    code = "body_too_large"


class UnsupportedMediaType(InvalidRequest):
    """A body was sent without ``Content-Type: application/json``."""

    http_status = 415
    code = "unsupported_media_type"


class HeadersTooLarge(InvalidRequest):
    """The request head (request line and headers) is larger than the server accepts."""

    http_status = 431
    code = "headers_too_large"


class MethodNotAllowed(InvalidRequest):
    """The path exists but does not take this method."""

    http_status = 405
    code = "method_not_allowed"


class PolicyDenied(TokenServiceError):
    """Policy denied the request; ``reasons`` says why, ``decision_id`` where it is logged."""

    exit_code = 7
    http_status = 403
    code = "denied"

    def __init__(
        self, reasons: list[str] | tuple[str, ...], decision_id: str | None = None
    ) -> None:
        self.reasons = tuple(reasons) or ("denied by policy",)
        self.decision_id = decision_id
        super().__init__("; ".join(self.reasons))


class PolicyUnavailable(TokenServiceError):
    """OPA could not give a usable decision; the request is refused (fail closed)."""

    exit_code = 8
    http_status = 503
    code = "policy_unavailable"


class SubmitFailed(TokenServiceError):
    """The job store (API server or spool directory) failed.

    ``created`` is False when nothing can have been created, None when the
    outcome is unknown (a retry of the same request tells).
    """

    exit_code = 8
    http_status = 503
    code = "submit_failed"

    def __init__(
        self, message: str, *, status: int | None = None, created: bool | None = False
    ) -> None:
        super().__init__(message)
        self.status = status  # the API server's HTTP status, None if it never answered
        self.created = created


class ServerBusy(TokenServiceError):
    """More requests are in flight than the server serves at once; nothing was done."""

    exit_code = 8
    http_status = 503
    code = "busy"


class ServerUnavailable(TokenServiceError):
    """The cluster management server could not be reached or failed (client side)."""

    exit_code = 8
    code = "server_unavailable"


class NotFound(TokenServiceError):
    """The named job does not exist (or is not visible to the caller), or no such path."""

    exit_code = 9
    http_status = 404
    code = "not_found"


class NoLogs(TokenServiceError):
    """This job store keeps no job output (the spool submitter runs nothing)."""

    exit_code = 18
    http_status = 501
    code = "no_logs"


class NotStarted(TokenServiceError):
    """The job's container has not started yet, so it has no output to show."""

    exit_code = 19
    http_status = 409
    code = "not_started"


# --- tokens ------------------------------------------------------------------------------


class InvalidToken(TokenServiceError):
    """The token is not authentic. Deliberately says nothing more."""

    exit_code = 10
    http_status = 401
    code = "invalid_token"

    def __init__(self) -> None:
        super().__init__("invalid token")


class TokenRejected(TokenServiceError):
    """An authentic token that must not be accepted now; subclasses say why."""

    exit_code = 10
    http_status = 401
    code = "token_rejected"


class Expired(TokenRejected):
    """The token's expiry time has passed."""

    exit_code = 11
    code = "expired"


class NotYetValid(TokenRejected):
    """The token was issued further in the future than the allowed clock skew."""

    exit_code = 12
    code = "not_yet_valid"


class WrongRealm(TokenRejected):
    """The token was minted for another cluster (realm)."""

    exit_code = 13
    code = "wrong_realm"


class Replayed(TokenRejected):
    """The token was already used (or its use cannot be vouched for).

    409, not 401: the token is genuine; what conflicts is the job store's
    record that it was consumed. Every replica answers the same.
    """

    exit_code = 14
    http_status = 409
    code = "replayed"


class KeyRetired(TokenRejected):
    """The token was sealed with a key that has since been retired."""

    exit_code = 15
    code = "key_retired"


class WrongRequest(TokenRejected):
    """The token is bound to another request, or unbound where a bound one is required."""

    exit_code = 16
    code = "wrong_request"


class KeyExpired(TokenRejected):
    """The token was sealed with a key outside its validity window (not-before/not-after)."""

    exit_code = 17
    code = "key_expired"


def _table() -> dict[str, type[TokenServiceError]]:
    seen: dict[str, type[TokenServiceError]] = {}
    pending: list[type[TokenServiceError]] = [TokenServiceError]
    while pending:
        cls = pending.pop()
        seen.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return seen


def error_table() -> list[type[TokenServiceError]]:
    """Every error class of the table, in exit-code then code order (docs print this)."""
    return sorted(_table().values(), key=lambda cls: (cls.exit_code, cls.code))


def error_for_code(code: object) -> type[TokenServiceError] | None:
    """The class whose ``code`` this is, or None for a code this version does not know."""
    return _table().get(code) if isinstance(code, str) else None


__all__ = [
    "EXIT_OK",
    "EXIT_USAGE",
    "BodyTooLarge",
    "ConfigError",
    "DaemonUnavailable",
    "Expired",
    "HeadersTooLarge",
    "InsecureKeyFile",
    "InvalidRequest",
    "InvalidToken",
    "KeyExpired",
    "KeyFileError",
    "KeyRetired",
    "MalformedBody",
    "MethodNotAllowed",
    "MintRefused",
    "NoLogs",
    "NotFound",
    "NotStarted",
    "NotYetValid",
    "PolicyDenied",
    "PolicyUnavailable",
    "Replayed",
    "ServerBusy",
    "ServerUnavailable",
    "SubmitFailed",
    "TokenRejected",
    "TokenServiceError",
    "UnsupportedMediaType",
    "WrongRealm",
    "WrongRequest",
    "error_for_code",
    "error_table",
]
