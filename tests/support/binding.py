"""What a test's token is bound to: the digest the server computes for a submit body."""

from __future__ import annotations

from typing import Any

from tokensvc.cluster.jobs import parse_job_request
from tokensvc.core.digest import request_digest


def submit_binding(body: Any) -> str | None:
    """The binding of a token for submitting ``body`` (None if the body is not a job request)."""
    try:
        return request_digest(parse_job_request(body).to_input())
    except ValueError:
        return None  # a test of a malformed body: its token is refused before binding matters
