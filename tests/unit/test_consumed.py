"""The spool's consumed-token records: one atomic claim per token, durable states, expiry."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tokensvc.cluster.consumed import SpoolRecords, TokenRecord
from tokensvc.core.digest import canonical_json, request_digest
from tokensvc.core.errors import SubmitFailed

TOKEN = "0123456789abcdef0123456789abcdef"
DIGEST = "a" * 64


def _record(token: str = TOKEN, digest: str = DIGEST, expires: int = 2000) -> TokenRecord:
    return TokenRecord(token, digest, expires)


def test_first_claim_wins_and_later_ones_see_it(tmp_path: Path) -> None:
    records = SpoolRecords(tmp_path)
    assert records.claim(_record()) is None
    again = records.claim(_record(digest="b" * 64))
    assert again == _record()  # the first request's digest, not the second's


def test_admit_is_durable_and_seen_by_another_instance(tmp_path: Path) -> None:
    SpoolRecords(tmp_path).claim(_record())
    SpoolRecords(tmp_path).admit(TOKEN)
    assert SpoolRecords(tmp_path).read(TOKEN) == TokenRecord(TOKEN, DIGEST, 2000, "admitted")


def test_racing_claims_have_exactly_one_winner(tmp_path: Path) -> None:
    records = SpoolRecords(tmp_path)
    results: list[TokenRecord | None] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        results.append(records.claim(_record()))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(None) == 1


def test_expired_records_are_purged_and_current_ones_kept(tmp_path: Path) -> None:
    records = SpoolRecords(tmp_path)
    records.claim(_record(expires=100))
    records.claim(_record(token="f" * 32, expires=5000))
    assert records.purge_expired(now=1000) == 1
    assert records.read(TOKEN) is None
    assert records.read("f" * 32) is not None


def test_unreadable_record_refuses_rather_than_forgets(tmp_path: Path) -> None:
    records = SpoolRecords(tmp_path)
    (tmp_path / f"{TOKEN}.json").write_text("{not json")
    with pytest.raises(SubmitFailed):
        records.claim(_record())
    assert records.purge_expired(now=10**12) == 0  # kept: it still refuses its token


def test_stale_temporaries_are_removed_at_start(tmp_path: Path) -> None:
    stale = tmp_path / f".{TOKEN}.0011223344556677.tmp"
    stale.write_text("half")
    fresh = tmp_path / f".{TOKEN}.8899aabbccddeeff.tmp"
    fresh.write_text("another server is writing this one")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    SpoolRecords(tmp_path)
    assert not stale.exists()
    assert fresh.exists()


def test_a_store_that_cannot_be_written_fails_closed(tmp_path: Path) -> None:
    records = SpoolRecords(tmp_path / "records")
    (tmp_path / "records").rmdir()
    (tmp_path / "records").write_text("not a directory")  # any write fails, even as root
    with pytest.raises(SubmitFailed, match="no job was created"):
        records.claim(_record())


def test_record_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="token_id"):
        TokenRecord("x" * 32, DIGEST, 1)
    with pytest.raises(ValueError, match="state"):
        TokenRecord(TOKEN, DIGEST, 1, "running")  # type: ignore[arg-type]


def test_canonical_json_sorts_keys_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": ["é", "🚀"]}) == '{"a":["é","🚀"],"b":1}'.encode()
    assert request_digest({"b": 1, "a": 2}) == request_digest({"a": 2, "b": 1})


@pytest.mark.parametrize("bad", [{"x": 1.5}, {"x": "\ud800"}, [float("nan")]])
def test_canonical_json_refuses_floats_and_lone_surrogates(bad: object) -> None:
    with pytest.raises(ValueError, match="canonical JSON"):
        canonical_json(bad)
