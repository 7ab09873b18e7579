"""Revocations as policy data: the file ``tokensvc revoke`` edits and the policy reads.

Revocations travel inside the signed policy bundle (every replica has them
within one bundle poll, and nobody can add or remove one without the
signing key), so they are decided by the policy, with a readable reason,
like every other denial (policies/wsc/authz/revoked.rego). The file is
``policies/data/wsc/revocations/data.yaml``, i.e. ``data.wsc.revocations``:

    token_ids: [{token_id: <32 hex>, reason: ..., revoked_at: <unix s>}]
    uids:      [{uid: <int>, issued_before: <unix s>, reason: ..., revoked_at: ...}]
    hosts:     [{host: <name>, issued_before: <unix s>, reason: ..., revoked_at: ...}]
    key_ids:   [{key_id: <16 hex>, reason: ..., revoked_at: ...}]

A token is revoked when its id is listed, when its uid or origin host is
listed and it was issued before that entry's time, or when it was sealed
with a listed key. Entries are never edited in place: a new entry for the
same subject replaces the old one; the file is written whole and renamed
into place, so the bundle build never reads half a file.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from tokensvc.core.claims import is_token_id
from tokensvc.core.errors import ConfigError

Kind = Literal["token_ids", "uids", "hosts", "key_ids"]
KINDS: Final[tuple[Kind, ...]] = ("token_ids", "uids", "hosts", "key_ids")
_SUBJECT: Final[dict[Kind, str]] = {
    "token_ids": "token_id",
    "uids": "uid",
    "hosts": "host",
    "key_ids": "key_id",
}
_KEY_ID: Final = re.compile(r"[0-9a-f]{16}")
# A host name as tokens carry it: RFC 1123 labels (the daemon writes gethostname()).
_HOST: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
MAX_REASON: Final = 200


@dataclass(frozen=True)
class Revocation:
    """One entry: what is revoked, since when it applies, and why."""

    kind: Kind
    subject: str | int
    reason: str
    revoked_at: int
    issued_before: int | None = None  # uids and hosts: tokens issued before this time

    def to_data(self) -> dict[str, Any]:
        entry: dict[str, Any] = {_SUBJECT[self.kind]: self.subject}
        if self.issued_before is not None:
            entry["issued_before"] = self.issued_before
        entry["reason"] = self.reason
        entry["revoked_at"] = self.revoked_at
        return entry


def check(rev: Revocation) -> Revocation:
    """``rev`` if its subject, times and reason are well formed; ConfigError naming the problem."""
    s = rev.subject
    if rev.kind == "token_ids" and not is_token_id(s):
        raise ConfigError(f"token id {s!r} is not 32 lowercase hex digits")
    if rev.kind == "key_ids" and not (isinstance(s, str) and _KEY_ID.fullmatch(s)):
        raise ConfigError(f"key id {s!r} is not 16 lowercase hex digits")
    if rev.kind == "hosts" and not (isinstance(s, str) and _HOST.fullmatch(s)):
        raise ConfigError(f"host {s!r} is not a host name")
    if rev.kind == "uids" and not (isinstance(s, int) and 0 <= s < 2**32):
        raise ConfigError(f"uid {s!r} is not a uid")
    needs_time = rev.kind in ("uids", "hosts")
    if needs_time != (rev.issued_before is not None):
        raise ConfigError("issued_before is given for uids and hosts, and only for them")
    if not rev.reason.strip() or len(rev.reason) > MAX_REASON or not rev.reason.isprintable():
        raise ConfigError(f"the reason must be 1..{MAX_REASON} printable characters")
    return rev


def load(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """The revocations of a file (empty lists if it does not exist yet)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: revocations must be a mapping of lists")
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        entries = doc.get(kind) or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(f"{path}: {kind} must be a list of mappings")
        out[kind] = entries
    return out


def add(path: str | os.PathLike[str], rev: Revocation) -> None:
    """Add (or replace) the entry for ``rev``'s subject and write the file atomically."""
    check(rev)
    doc = load(path)
    field = _SUBJECT[rev.kind]
    kept = [e for e in doc[rev.kind] if e.get(field) != rev.subject]
    doc[rev.kind] = sorted([*kept, rev.to_data()], key=lambda e: str(e.get(field)))
    _write(Path(path), doc)


def _write(path: Path, doc: dict[str, Any]) -> None:
    header = (
        "# Revoked tokens, users, hosts and keys -> data.wsc.revocations (schema:\n"
        "# docs/policy.md). Written by `tokensvc revoke ...` (docs/operations.md,\n"
        '# "Incident playbook"); shipped in the signed policy bundle.\n'
    )
    text = header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {err.strerror}") from err


__all__ = ["KINDS", "Revocation", "add", "check", "load"]
