"""The canonical digest of a request: what a submit token's use is recorded against.

Canonical form: the JSON document with object keys sorted, no insignificant
whitespace (``","`` and ``":"`` separators), strings as UTF-8 rather than
``\\u`` escapes, integers in decimal; no floats, NaN or lone surrogates
(refused with ValueError). The digest is SHA-256 over those bytes, as 64
lowercase hex digits. docs/token-format.md defines the same form, so any
language can compute it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

DIGEST_HEX_LEN = 64


def _no_floats(value: Any) -> None:
    if isinstance(value, float):
        raise ValueError("canonical JSON carries no floats")
    if isinstance(value, dict):
        for item in value.values():
            _no_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _no_floats(item)


def canonical_json(doc: Any) -> bytes:
    """``doc`` in canonical form (see the module docstring)."""
    _no_floats(doc)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate
        raise ValueError("canonical JSON must be valid Unicode") from err


def request_digest(doc: Any) -> str:
    """SHA-256 of ``canonical_json(doc)``, 64 lowercase hex digits."""
    return hashlib.sha256(canonical_json(doc)).hexdigest()


__all__ = ["DIGEST_HEX_LEN", "canonical_json", "request_digest"]
