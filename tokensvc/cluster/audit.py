"""The server's audit log: one JSON object per line, keys sorted, on the ``tokensvc.audit`` logger.

An audit line never carries a token, a key, or decrypted claims beyond uid,
gid and groups. A decision line carries the OPA input as
:func:`loggable_input` reduces it, so the decision can be replayed later
against the policy that made it (its bundle revision is on the line too) or
another one (``tokensvc policy diff``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, Final, TextIO

AUDIT_LOGGER: Final = "tokensvc.audit"
_AUDIT_LOG: Final = logging.getLogger(AUDIT_LOGGER)


def audit_line(event: Mapping[str, Any]) -> None:
    """Write one audit event as a JSON line (keys sorted) to the audit logger."""
    if _AUDIT_LOG.isEnabledFor(logging.INFO):
        line = json.dumps(event, separators=(",", ":"), sort_keys=True)
        # What Logger.info does, minus finding the caller's source line: the
        # audit format is the message alone.
        record = _AUDIT_LOG.makeRecord(AUDIT_LOGGER, logging.INFO, "", 0, line, (), None)
        _AUDIT_LOG.handle(record)


# What of an OPA input's identity an audit line may keep.
LOGGED_IDENTITY_FIELDS: Final = ("uid", "gid", "groups")
# Request fields no policy reads that may carry secrets (a command line's arguments).
UNLOGGED_REQUEST_FIELDS: Final = ("command",)


def loggable_input(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An OPA input minus what may not be logged: identity reduced to uid, gid and groups."""
    identity = doc.get("identity") or {}
    request = doc.get("request") or {}
    return {
        **doc,
        "identity": {k: identity[k] for k in LOGGED_IDENTITY_FIELDS if k in identity},
        "request": {k: v for k, v in request.items() if k not in UNLOGGED_REQUEST_FIELDS},
    }


def configure_audit_log(stream: TextIO | None = None) -> None:
    """Audit lines (one JSON object each) to stderr, unformatted."""
    if not _AUDIT_LOG.handlers:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _AUDIT_LOG.addHandler(handler)
        _AUDIT_LOG.setLevel(logging.INFO)
        _AUDIT_LOG.propagate = False


__all__ = [
    "AUDIT_LOGGER",
    "LOGGED_IDENTITY_FIELDS",
    "audit_line",
    "configure_audit_log",
    "loggable_input",
]
