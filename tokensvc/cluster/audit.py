"""The server's audit log: one JSON object per line, keys sorted, on the ``tokensvc.audit`` logger.

An audit line never carries a token, a key, a request body or decrypted
claims beyond uid, gid and groups.
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


def configure_audit_log(stream: TextIO | None = None) -> None:
    """Audit lines (one JSON object each) to stderr, unformatted."""
    if not _AUDIT_LOG.handlers:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _AUDIT_LOG.addHandler(handler)
        _AUDIT_LOG.setLevel(logging.INFO)
        _AUDIT_LOG.propagate = False


__all__ = ["AUDIT_LOGGER", "audit_line", "configure_audit_log"]
