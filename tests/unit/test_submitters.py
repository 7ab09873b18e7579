"""Spool submitter: whole manifests or none, one job per name, records from the file."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokensvc.cluster.jobs import JobRequest
from tokensvc.cluster.launcher import build_pod, pod_manifest
from tokensvc.cluster.opa import Decision, RunAs
from tokensvc.cluster.submitters import (
    JobExists,
    SpoolSubmitter,
    SubmitFailed,
    record_from_manifest,
    to_yaml,
)
from tokensvc.core.errors import NotFound, Replayed


@dataclasses.dataclass(frozen=True)
class Ident:
    uid: int
    token_id: str
    gid: int = 2001
    groups: tuple[int, ...] = (2001,)


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
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"wsc-job-{'a' * 32}.yaml"]


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
    assert len(list(tmp_path.iterdir())) == 1


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path / "jobs")
    (tmp_path / "jobs").rmdir()  # the backend vanishes under the running server
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
