"""Spool submitter: whole manifests or none, one job per name, records from the file, an index."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ident import Ident

from tokensvc.cluster.jobs import MAX_ARG_CHARS, JobRequest, parse_job_request
from tokensvc.cluster.launcher import build_manifest, build_pod, pod_manifest
from tokensvc.cluster.opa import Decision, GrantedMount, RunAs
from tokensvc.cluster.spool import (
    CONSUMED_DIR,
    INDEX_DIR,
    STALE_TMP_SECONDS,
    entry_name,
    record_from_entry,
)
from tokensvc.cluster.submitters import (
    JobExists,
    SpoolSubmitter,
    SubmitFailed,
    record_from_manifest,
    to_yaml,
)
from tokensvc.core.errors import NotFound, Replayed


def pod(token_id: str = "a" * 32, uid: int = 1001, project: str = "ml-team") -> dict[str, Any]:
    decision = Decision(allow=True, run_as=RunAs(uid, 2001), supplemental_groups=(2001,))
    request = JobRequest(project=project, image="busybox", command=("true",), priority=2)
    return pod_manifest(build_pod(Ident(uid, token_id), decision, request, decision_id="d-1"))


def test_create_get_list(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path / "jobs")
    record = spool.create(pod())
    assert record.name == "wsc-job-" + "a" * 32
    assert (record.owner_uid, record.project, record.priority) == (1001, "ml-team", 2)
    assert record.decision_id == "d-1" and record.token_id == "a" * 32
    assert spool.get(record.name) == record
    assert spool.list() == [record]
    assert spool.manifest(record.name) == pod()
    stored = yaml.safe_load((tmp_path / "jobs" / f"{record.name}.yaml").read_text())
    assert stored == pod()


def test_second_create_with_the_same_token_collides(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path)
    spool.create(pod())
    with pytest.raises(JobExists) as err:
        spool.create(pod(uid=1002))
    assert isinstance(err.value, Replayed)
    assert spool.get(err.value.name).owner_uid == 1001  # the first one stands
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [CONSUMED_DIR, INDEX_DIR, f"wsc-job-{'a' * 32}.yaml"]
    assert len(os.listdir(tmp_path / INDEX_DIR)) == 1


def test_concurrent_creates_make_exactly_one_job(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path)
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            spool.create(pod())
            outcomes.append("created")
        except JobExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] + ["exists"] * 7
    assert len(list(tmp_path.glob("*.yaml"))) == 1
    assert len(spool.list()) == 1


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path / "jobs")
    # The backend vanishes under the running server.
    (tmp_path / "jobs" / INDEX_DIR).rmdir()
    (tmp_path / "jobs" / CONSUMED_DIR).rmdir()
    (tmp_path / "jobs").rmdir()
    with pytest.raises(SubmitFailed, match="no job was created"):
        spool.create(pod())
    assert list(tmp_path.iterdir()) == []


def test_delete_and_not_found(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path)
    name = spool.create(pod()).name
    spool.delete(name)
    assert spool.list() == []
    with pytest.raises(NotFound):
        spool.get(name)
    with pytest.raises(NotFound):
        spool.delete(name)
    with pytest.raises(NotFound):
        spool.get("../../etc/passwd")


def test_set_priority_rewrites_only_the_annotation(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path)
    name = spool.create(pod()).name
    record = spool.set_priority(name, 9)
    assert record.priority == 9 and spool.get(name).priority == 9
    assert spool.list() == [record]
    expected = pod()
    expected["metadata"]["annotations"]["tokensvc.io/priority"] = "9"
    assert spool.manifest(name) == expected
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_foreign_or_corrupt_files_are_not_jobs(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path)
    good = spool.create(pod()).name
    foreign = pod("b" * 32)
    del foreign["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    (tmp_path / f"wsc-job-{'b' * 32}.yaml").write_text(yaml.safe_dump(foreign))
    (tmp_path / f"wsc-job-{'c' * 32}.yaml").write_text("[unclosed")
    assert [r.name for r in spool.list() if r.name == good] == [good]
    with pytest.raises(NotFound):
        spool.get(f"wsc-job-{'b' * 32}")
    # At start the index is repaired: neither file becomes a job.
    assert [r.name for r in SpoolSubmitter(tmp_path).list()] == [good]


@pytest.mark.parametrize(
    "label",
    ["tokensvc.io/owner-uid", "tokensvc.io/project", "tokensvc.io/token-id"],
)
def test_record_needs_every_label(label: str) -> None:
    manifest = pod()
    del manifest["metadata"]["labels"][label]
    with pytest.raises(ValueError, match="label"):
        record_from_manifest(manifest)


EDGE: dict[str, Any] = {
    "empty_map": {},
    "empty_list": [],
    "nested": [[1, [2]], [], [{"a": [{"b": None}]}]],
    "words": ["on", "Yes", "n", "NULL", "True", "~", "", "null", "off"],
    "numbers_as_text": ["0755", "1e3", "0x1F", "1:20", ".inf", "2026-11-26", "1001"],
    "punctuation": ["x: y", "- x", "#c", "a#b", "[a]", "{a}", "*a", "&a", "!a", "|", ">"],
    "text": ["multi\nline", "ü", "tab\tx", 'quote"s', "back\\slash", " lead", "trail "],
    "plain": ["ml-team", "tokensvc.io/owner-uid", "x/y.z-1", "RuntimeDefault"],
    "scalars": [0, -1, 1.5, True, False, None],
    "n": "y",
}


def test_yaml_round_trips_edge_cases() -> None:
    assert yaml.safe_load(to_yaml(EDGE)) == EDGE


def test_yaml_of_a_pod_is_readable_and_round_trips() -> None:
    manifest = pod()
    text = to_yaml(manifest)
    assert yaml.safe_load(text) == manifest
    assert "kind: Pod\n" in text and "  runAsNonRoot: true\n" in text


def test_index_entries_read_back_as_the_record() -> None:
    record = record_from_manifest(pod())
    for decision_id in (None, "d-1", "a,b/c%d é 😀", "..", ""):
        r = dataclasses.replace(record, decision_id=decision_id, priority=None)
        entry = entry_name(r)
        assert "/" not in entry and entry not in (".", "..")
        assert record_from_entry(entry) == r


def test_start_repairs_the_index_and_removes_stale_temporary_files(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path)
    kept = spool.create(pod("a" * 32))
    unindexed = spool.create(pod("b" * 32))
    cancelled = spool.create(pod("c" * 32))
    # A crash between the two steps of a create, and of a cancel:
    (tmp_path / INDEX_DIR / entry_name(unindexed)).unlink()
    (tmp_path / f"{cancelled.name}.yaml").unlink()
    stale, fresh = tmp_path / ".tmp-0123456789abcdef", tmp_path / ".tmp-fedcba9876543210"
    stale.write_text("half a manifest")
    fresh.write_text("another server's manifest being written")
    old = time.time() - STALE_TMP_SECONDS - 1
    os.utime(stale, (old, old))
    assert [r.name for r in spool.list()] == [kept.name, cancelled.name]

    assert SpoolSubmitter(tmp_path).list() == [kept, unindexed]
    assert not stale.exists() and fresh.exists()


def test_list_filters_by_owner_and_project(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path)
    mine = spool.create(pod("a" * 32, uid=1001, project="ml-team"))
    theirs = spool.create(pod("b" * 32, uid=1002, project="ml-team"))
    other = spool.create(pod("c" * 32, uid=1002, project="vision"))
    assert spool.list() == [mine, theirs, other]
    assert spool.list(owner_uid=1001, projects=()) == [mine]
    assert spool.list(owner_uid=1001, projects=["ml-team"]) == [mine, theirs]
    assert spool.list(owner_uid=1003, projects={"vision"}) == [other]


def test_list_parses_no_manifest(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path)
    record = spool.create(pod())
    (tmp_path / f"{record.name}.yaml").write_text("[unreadable, but listing never reads it")
    assert spool.list() == [record]


def test_a_job_that_cannot_be_indexed_is_not_stored(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path)
    manifest = pod()
    manifest["metadata"]["annotations"]["tokensvc.io/decision-id"] = "x" * 300
    with pytest.raises(SubmitFailed) as err:
        spool.create(manifest)
    assert err.value.created is False
    assert list(tmp_path.glob("*.yaml")) == [] and spool.list() == []


# --- every valid Unicode string round-trips: submit -> store -> get/list/cancel ---------

# What YAML (or a hand-written emitter) may read differently: indicators,
# words YAML 1.1 re-types, line breaks YAML normalises, a BOM, astral planes.
_TRICKY = st.sampled_from(
    ["- a: b", "#", "&x", "*x", "!!python/object:os.system", "null", "~", "'", '"', "yes",
     "0755", "1e3", ": ", "\n", "\x85", "\u2028", "\u2029", "\ufeff", "\r\n", "\t",
     " ", "😀", "\U0010ffff", "%TAG", "---", "...", "|", ">", "{a: 1}", "[1]", "\\"]
)  # fmt: skip
# st.text() never draws a lone surrogate: exactly the valid Unicode strings.
_ANY_TEXT = st.lists(st.one_of(_TRICKY, st.text()), max_size=4).map("".join)
_ARG = _ANY_TEXT.filter(lambda s: "\x00" not in s and len(s) <= MAX_ARG_CHARS)
_JOB_BODY = st.fixed_dictionaries(
    {
        "project": st.from_regex(r"[a-z_][a-z0-9_-]{0,31}", fullmatch=True),
        "image": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,40}", fullmatch=True),
        "command": st.lists(_ARG, min_size=1, max_size=6),
    },
    optional={"priority": st.integers(0, 1000), "resources": st.just({"systems": 2})},
)


@dataclasses.dataclass(frozen=True)
class _Identity:
    uid: int
    token_id: str
    gid: int = 2001
    groups: tuple[int, ...] = (2001,)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_JOB_BODY,
    token_id=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    decision_id=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)),
    sub_path=_ANY_TEXT.filter(
        lambda s: not s.startswith("/") and ".." not in s.split("/") and "\x00" not in s
    ),
    mount_leaf=_ANY_TEXT.filter(lambda s: not any(c < " " or c in "/\x7f" for c in s)),
)
def test_every_valid_job_round_trips_through_the_spool(  # noqa: PLR0917 (given's arguments)
    tmp_path_factory: pytest.TempPathFactory,
    body: dict[str, Any],
    token_id: str,
    decision_id: str | None,
    sub_path: str,
    mount_leaf: str,
) -> None:
    path = "/nfs/x" + mount_leaf
    request = parse_job_request({**body, "mounts": [{"path": path}]})
    mount = GrantedMount(export="e", pvc="p", sub_path=sub_path, read_only=True, path=path)
    decision = Decision(allow=True, run_as=RunAs(1001, 2001), supplemental_groups=(2001,))
    decision = dataclasses.replace(decision, mounts=(mount,))
    identity = _Identity(1001, token_id)
    manifest = build_manifest(identity, decision, request, decision_id=decision_id)
    spool = SpoolSubmitter(tmp_path_factory.mktemp("spool"), fsync=False)

    record = spool.create(manifest)
    assert spool.manifest(record.name) == manifest
    assert spool.get(record.name) == record == record_from_manifest(manifest)
    assert spool.list() == [record]
    assert SpoolSubmitter(spool.directory, fsync=False).list() == [record]
    spool.delete(record.name)
    assert spool.list() == []


def test_a_create_that_cannot_be_confirmed_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = SpoolSubmitter(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(spool, "index", tmp_path / "gone")  # the index step fails
        with pytest.raises(SubmitFailed) as err:
            spool.create(pod())
    assert err.value.created is False
    assert list(tmp_path.glob("*.yaml")) == [] and spool.list() == []
