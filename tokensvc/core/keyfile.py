"""Key-file permission checks: who may have written a key file, and who may read it.

MUNGE's rules (munged/path.c): the file is a regular file, not a symlink,
owned by root (or the effective uid), neither readable nor writable by
group or others -- except one trusted group that may read it (the 0440
root:fsGroup file a kubelet creates for a Kubernetes Secret). Every parent
directory up to / is owned by root (or the effective uid), is not a
symlink, and is not writable by group or others unless sticky. Each problem
has its own message naming the path and the mode (docs/operations.md lists
them); each has its own test.
"""

from __future__ import annotations

import logging
import os
import stat

from tokensvc.core.errors import InsecureKeyFile, KeyFileError

log = logging.getLogger(__name__)


def _perms(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


def _owners(euid: int) -> str:
    return "must be owned by root" if euid == 0 else f"must be owned by root or uid {euid}"


def file_problems(
    path: str, st: os.stat_result, euid: int, trusted_gid: int | None = None
) -> list[str]:
    problems = []
    if st.st_uid not in (euid, 0):
        problems.append(f"key ring {path} is insecure: owned by uid {st.st_uid}, {_owners(euid)}")
    group_bits = stat.S_IRGRP | stat.S_IWGRP
    if trusted_gid is not None and st.st_gid == trusted_gid:
        group_bits = stat.S_IWGRP  # the trusted group may read, never write
    if st.st_mode & group_bits:
        problems.append(
            f"key ring {path} is insecure: readable or writable by group "
            f"(perms={_perms(st.st_mode)})"
        )
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        problems.append(
            f"key ring {path} is insecure: readable or writable by others "
            f"(perms={_perms(st.st_mode)})"
        )
    return problems


def parent_problems(path: str, euid: int) -> list[str]:
    """Problems with every directory from the file's parent up to /.

    Paths are made absolute lexically; that equals the kernel's view because
    any symlinked component is itself refused.
    """
    problems = []
    directory = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.lstat(directory)
        except OSError as err:
            raise KeyFileError(f"cannot inspect directory {directory}: {err.strerror}") from None
        where = f"directory {directory} (holding key ring {path})"
        if stat.S_ISLNK(st.st_mode):
            problems.append(f"{where} is insecure: it is a symlink; use the real path")
        elif not stat.S_ISDIR(st.st_mode):
            problems.append(f"{where} is not a directory")
        else:
            if st.st_uid not in (euid, 0):
                problems.append(f"{where} is insecure: owned by uid {st.st_uid}, {_owners(euid)}")
            sticky = bool(st.st_mode & stat.S_ISVTX)
            if st.st_mode & stat.S_IWGRP and not sticky:
                problems.append(
                    f"{where} is insecure: writable by group without the sticky bit "
                    f"(perms={_perms(st.st_mode)})"
                )
            if st.st_mode & stat.S_IWOTH and not sticky:
                problems.append(
                    f"{where} is insecure: writable by others without the sticky bit "
                    f"(perms={_perms(st.st_mode)})"
                )
        parent = os.path.dirname(directory)
        if parent == directory:
            return problems
        directory = parent


def refuse_or_warn(problems: list[str], *, allow_insecure: bool) -> None:
    if not problems:
        return
    if not allow_insecure:
        raise InsecureKeyFile(problems[0])
    for problem in problems:
        log.warning("INSECURE KEY RING ACCEPTED (allow_insecure override): %s", problem)


def read_secure(
    path: str, *, max_size: int, allow_insecure: bool, trusted_gid: int | None = None
) -> tuple[bytes, os.stat_result]:
    """Check a key file, then read it: its bytes (at most ``max_size``) and its stat.

    Every parent directory is judged first, then the file actually opened
    (fstat of the descriptor, so no swap in between). Problems raise
    :class:`InsecureKeyFile` with the first one's message, unless
    ``allow_insecure`` (then each is logged as a warning).
    """
    euid = os.geteuid()
    refuse_or_warn(parent_problems(path, euid), allow_insecure=allow_insecure)
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        raise KeyFileError(f"key ring {path} does not exist") from None
    except OSError as err:
        raise KeyFileError(f"cannot inspect key ring {path}: {err.strerror}") from None
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang us
    if stat.S_ISLNK(lst.st_mode):
        refuse_or_warn(
            [f"key ring {path} is insecure: it is a symlink"], allow_insecure=allow_insecure
        )
    else:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise KeyFileError(f"cannot open key ring {path}: {err.strerror}") from None
    try:
        # Judge the file actually opened (fstat), not the name: no swap in between.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InsecureKeyFile(f"key ring {path} is not a regular file")
        refuse_or_warn(file_problems(path, st, euid, trusted_gid), allow_insecure=allow_insecure)
        chunks = []
        size = 0
        while size <= max_size:
            chunk = os.read(fd, max_size + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise KeyFileError(f"cannot read key ring {path}: {err.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_size:
        raise KeyFileError(f"key ring {path} is larger than {max_size} bytes")
    return data, st


__all__ = [
    "file_problems",
    "parent_problems",
    "read_secure",
    "refuse_or_warn",
]
