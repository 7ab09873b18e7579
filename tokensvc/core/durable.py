"""Writing files that survive a crash: whole writes, and directory entries made durable.

A file created, linked or renamed into a directory is durable only once the
directory itself is fsync'ed: the file's own fsync covers its data, not the
entry that names it. Callers that write a temporary file and then link or
rename it into place call :func:`write_all`, then :func:`fsync_dir` on the
directory.
"""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes, *, sync: bool = True) -> None:
    """Write every byte of ``data`` to ``fd`` (retrying short writes); then fsync it if ``sync``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if sync:
        os.fsync(fd)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the entries of ``directory`` durable (created, linked, renamed or removed names)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["fsync_dir", "write_all"]
