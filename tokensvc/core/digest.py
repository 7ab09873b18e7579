"""The canonical digest of a request: what a submit token's use is recorded against.

Canonical form: the JSON document with object keys sorted, no insignificant
whitespace (``","`` and ``":"`` separators), strings as UTF-8 rather than
``\\u`` escapes, integers in decimal; no floats, NaN or lone surrogates
(refused with ValueError). The digest is SHA-256 over those bytes, as 64
lowercase hex digits. docs/token-format.md defines the same form, so any
language can compute it.

What is digested: for a submit, the parsed request's OPA input document
(``JobRequest.to_input()``); for an action on an existing job,
:func:`action_document` — ``{"action": ..., "job": ...}`` plus the action's
own body fields (``set_priority``: ``"priority"``).
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


def action_document(action: str, job: str, /, **body: Any) -> dict[str, Any]:
    """The document an action on job ``job`` is bound to.

    ``{"action": action, "job": job}`` plus the fields of the action's JSON
    body, if it has one (``set_priority``: ``priority=N``). The body may not
    use the names ``action`` or ``job`` (ValueError).
    """
    if not isinstance(action, str) or not isinstance(job, str):
        raise ValueError("action and job must be strings")
    if "action" in body or "job" in body:
        raise ValueError("an action's body cannot override 'action' or 'job'")
    return {"action": action, "job": job, **body}


def action_digest(action: str, job: str, /, **body: Any) -> str:
    """``request_digest(action_document(action, job, **body))``."""
    return request_digest(action_document(action, job, **body))


__all__ = [
    "DIGEST_HEX_LEN",
    "action_digest",
    "action_document",
    "canonical_json",
    "request_digest",
]
