"""A job's output as a stream of byte chunks, read in worker threads, bounded in size.

A job store opens a :class:`LogStream` for a job that has run
(:meth:`~tokensvc.cluster.jobstore.Submitter.logs`); the server reads it
chunk by chunk in its thread pool and sends each chunk on as it arrives.
Every stream is bounded:

- in size: at most ``limit_bytes`` (the store asks its source for no more,
  and :class:`HTTPLogStream` stops there even if the source sends more);
- in time: a stream that is not followed ends within the store's deadline
  per read; a followed one ends when the job's container ends, when
  ``limit_bytes`` are sent, or when :meth:`LogStream.shutdown` is called
  (the server calls it once its client has gone), and breaks off when its
  source stays silent for ``FOLLOW_IDLE_TIMEOUT``;
- in number: the server follows at most a fixed number of streams at once
  (:class:`~tokensvc.cluster.service.AdmissionService`).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Final, Protocol

import urllib3

from tokensvc.core.errors import SubmitFailed

MAX_LOG_BYTES: Final = 8 << 20  # one answer holds at most this much of a job's output
CHUNK_BYTES: Final = 64 << 10  # at most this much per read (a read returns what has arrived)
# A followed output that shows nothing new for this long breaks off: the
# backstop for a source that stalls while its client stays connected.
FOLLOW_IDLE_TIMEOUT: Final = 3600.0


class LogStream(Protocol):
    """A job's output, read from a worker thread; ``shutdown`` may be called from any thread."""

    def read(self) -> bytes:
        """The next chunk as soon as any output is there; ``b""`` once the output has ended.

        Raises :class:`SubmitFailed` when the source breaks off (the output is
        incomplete).
        """

    def shutdown(self) -> None:
        """Make a blocked or later :meth:`read` return ``b""`` soon; never blocks."""

    def close(self) -> None:
        """Release the connection (after the last read)."""


class HTTPLogStream:
    """A streamed HTTP body (urllib3, ``preload_content=False``) as a :class:`LogStream`."""

    def __init__(self, response: Any, *, limit_bytes: int) -> None:
        self._response = response
        self._left = limit_bytes
        self._stopped = False
        self._lock = threading.Lock()  # one read at a time; close waits for it

    def read(self) -> bytes:
        with self._lock:
            if self._stopped or self._left <= 0:
                return b""
            try:
                data: bytes = self._response.read1(min(CHUNK_BYTES, self._left))
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:
                if self._stopped:
                    return b""  # shut down on purpose
                raise SubmitFailed("the job's output stream broke off") from err
            if self._stopped:
                return b""
            self._left -= len(data)
            return data

    def shutdown(self) -> None:
        self._stopped = True
        # The socket's read side: a read blocked in another thread returns at once.
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            self._response.shutdown()

    def close(self) -> None:
        self._stopped = True
        with self._lock:
            self._response.close()  # closes the connection too: it is not reused


__all__ = ["CHUNK_BYTES", "FOLLOW_IDLE_TIMEOUT", "MAX_LOG_BYTES", "HTTPLogStream", "LogStream"]
