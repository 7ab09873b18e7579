"""tokensvc deployed from deploy/k8s on the real node; users submit, the kernel says who ran.

The server runs as the operator deploys it (tests/e2e/deployed.py): two
replicas, each with its OPA sidecar that activated the signed bundle from
the bundle service, reading the key ring Secret as its non-root user
through fsGroup. The host is the user node: `tokensvc mintd` as root, and
users A, B and C calling `tokensvc submit` with their real uids (setpriv).

Every identity below is the kernel's: the token says what SO_PEERCRED and
SO_PEERGROUPS said of the caller, the policy (policies/data: ml-team 2001,
vision 2002, students 2003) decides, and each job prints `id` and its own
/proc/self/status, which the assertions compare with the decision. On the
storage volumes (local volumes under the exports' claim names, with real
owners and modes) the kernel decides what a job may touch:

    home/10000      10000:2001 0700   A's own tree
    home/10000/escape -> the exports' directory, a symlink A planted
    home/61102      61102:2002 0700   B's own tree
    projects/ml     0:2001     2770   ml-team's shared tree
    datasets/       0:0        0755   a read-only grant for ml-team
    datasets/b-private  61102:2002 0700   B's tree inside it
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from deployed import Deployed, deployed
from integration.usernode import User, cli_as, cli_env
from jobpods import job_status_lines, wait_ended
from prometheus_client.parser import text_string_to_metric_families
from realnode import IMAGE_EXTRA_GID, IMAGE_USER_UID, IMAGES, Cluster

pytestmark = pytest.mark.root

# A is the job images' /etc/passwd user, so the job-extra-group image's
# /etc/group names A: a runtime that merged it would hand A group 4242.
A = User("A", IMAGE_USER_UID, 2001, (2001,))  # ml-team
B = User("B", 61102, 2002, (2002,))  # vision
C = User("C", 61103, 2001, (2001, 2002, 2003))  # ml-team, vision and students
JOB_TIMEOUT = 120.0
SHOW_IDENTITY = "id; grep -E '^(Uid|Gid|Groups):' /proc/self/status"


@pytest.fixture(scope="module")
def deployment(cluster: Cluster) -> Iterator[Deployed]:
    with deployed(cluster) as d:
        _make_trees(d.exports)
        yield d


def _make_trees(exports: dict[str, Path]) -> None:
    def tree(path: Path, uid: int, gid: int, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, gid)
        path.chmod(mode)

    tree(exports["home"] / str(A.uid), A.uid, A.gid, 0o700)
    tree(exports["home"] / str(B.uid), B.uid, B.gid, 0o700)
    tree(exports["projects"] / "ml", 0, 2001, 0o2770)
    (exports["datasets"] / "shared.txt").write_text("for ml-team to read\n")
    tree(exports["datasets"] / "b-private", B.uid, B.gid, 0o700)
    (exports["datasets"] / "b-private" / "secret.txt").write_text("B's\n")
    # Planted by A in A's own tree (A owns the link), pointing at the
    # directory that holds every export's tree: B's home is below it.
    escape = exports["home"] / str(A.uid) / "escape"
    escape.symlink_to(exports["home"].parent)
    os.lchown(escape, A.uid, A.gid)


def _submit(
    d: Deployed,
    user: User,
    replica: int,
    project: str,
    script: str,
    *mounts: str,
    image: str = IMAGES["job"],
) -> dict[str, Any]:
    """`tokensvc submit -o json` as ``user`` against one replica; the server's answer."""
    args = ["submit", "--server", d.server_urls[replica], "--project", project, "--image", image]
    for m in mounts:
        args += ["--mount", m]
    done = cli_as(user, d.tree, *args, "-o", "json", "--", "sh", "-c", "exec 2>&1; " + script)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _output(d: Deployed, job: str) -> tuple[str, str, int | None]:
    """Wait until the job's pod ends; its phase, output and exit code (read as admin)."""
    ran = wait_ended(d.cluster, job, d.cluster.api.jobs_namespace)
    return ran.phase, ran.output, ran.exit_code


def _identity(output: str) -> tuple[str, str, set[int]]:
    status = job_status_lines(output)
    return status["Uid"], status["Gid"], {int(g) for g in status["Groups"].split()}


def _decided(answer: dict[str, Any]) -> tuple[int, int, set[int]]:
    ctx = answer["pod"]["spec"]["securityContext"]
    return ctx["runAsUser"], ctx["runAsGroup"], {ctx["runAsGroup"], *ctx["supplementalGroups"]}


def _assert_runs_as_decided(output: str, answer: dict[str, Any]) -> None:
    uid, gid, groups = _decided(answer)
    # Real, effective, saved and filesystem ids, all four.
    assert _identity(output) == (f"{uid} {uid} {uid} {uid}", f"{gid} {gid} {gid} {gid}", groups)


def test_the_server_runs_as_deployed(deployment: Deployed) -> None:
    pods = deployment.server_pods()
    assert len(pods) == 2
    for pod in pods:
        statuses = {cs.name: cs for cs in pod.status.container_statuses}
        assert all(cs.ready for cs in statuses.values()), pod.status
        # The kernel's identity of the server process: the non-root user, and
        # the fsGroup through which it reads the key ring Secret (0440 root:65532).
        linux = statuses["server"].user.linux
        assert (linux.uid, linux.gid, sorted(linux.supplemental_groups)) == (65532, 65532, [65532])
        assert pod.spec.containers[0].image == IMAGES["server"]
        assert pod.spec.containers[1].image == IMAGES["opa"]
    assert len(deployment.server_urls) == 2


def test_each_user_runs_as_the_decision_says(deployment: Deployed) -> None:
    answers = {
        "A": _submit(deployment, A, 0, "ml-team", SHOW_IDENTITY),
        "B": _submit(deployment, B, 1, "vision", SHOW_IDENTITY),
        # Charged to students: the job carries that group and none of C's others.
        "C": _submit(deployment, C, 0, "students", SHOW_IDENTITY),
    }
    expected = {
        "A": (A.uid, 2001, {2001}),
        "B": (B.uid, 2002, {2002}),
        "C": (C.uid, 2003, {2003}),
    }
    for who, answer in answers.items():
        assert _decided(answer) == expected[who], answer
        phase, output, code = _output(deployment, answer["job"]["id"])
        assert (phase, code) == ("Succeeded", 0), output
        _assert_runs_as_decided(output, answer)
        # `id` names the image's user where its /etc/passwd has one: uid=10000(job).
        assert re.match(rf"uid={expected[who][0]}\b", output), output


def test_the_image_group_file_adds_nothing(deployment: Deployed) -> None:
    answer = _submit(deployment, A, 1, "ml-team", SHOW_IDENTITY, image=IMAGES["job-extra-group"])
    phase, output, _ = _output(deployment, answer["job"]["id"])
    assert phase == "Succeeded", output
    _assert_runs_as_decided(output, answer)
    assert IMAGE_EXTRA_GID not in _identity(output)[2]


def test_the_kernel_keeps_a_job_to_its_grants(deployment: Deployed) -> None:
    home = f"/nfs/home/{A.uid}"
    script = "; ".join(
        [
            f"echo mine > {home}/a.txt && cat {home}/a.txt",
            "echo ours > /nfs/projects/ml/a.txt && echo shared-write=$?",
            "cat /nfs/datasets/shared.txt",
            "ls /nfs/datasets/b-private; echo b-private=$?",
            "touch /nfs/datasets/a.txt; echo read-only-write=$?",
        ]
    )
    answer = _submit(
        deployment,
        A,
        0,
        "ml-team",
        script,
        f"{home}:rw",
        "/nfs/projects/ml:rw",
        "/nfs/datasets:ro",
    )
    mounts = {m["mountPath"]: m for m in answer["pod"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/nfs/datasets"]["readOnly"] is True
    phase, output, _ = _output(deployment, answer["job"]["id"])
    assert phase == "Succeeded", output
    lines = output.splitlines()
    assert "mine" in lines  # its own tree, read and written
    assert "shared-write=0" in lines  # the group-shared tree it was granted
    assert "for ml-team to read" in lines  # the read-only grant reads
    assert "b-private=1" in lines and "Permission denied" in output  # B's tree: EACCES
    assert "read-only-write=1" in lines and "Read-only file system" in output
    # What the job wrote belongs to A on the volume, as the kernel made it.
    written = deployment.exports["projects"] / "ml" / "a.txt"
    assert (written.stat().st_uid, written.stat().st_gid) == (A.uid, 2001)
    assert not (deployment.exports["datasets"] / "a.txt").exists()


def test_another_user_cannot_touch_a_job(deployment: Deployed) -> None:
    answer = _submit(deployment, A, 0, "ml-team", "sleep 300")
    job = answer["job"]["id"]
    refused = cli_as(B, deployment.tree, "cancel", "--server", deployment.server_urls[1], job)
    assert refused.returncode != 0, refused.stdout
    listed = cli_as(B, deployment.tree, "jobs", "--server", deployment.server_urls[1], "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert job not in {j["id"] for j in json.loads(listed.stdout)}
    pod = deployment.cluster.core().read_namespaced_pod(job, deployment.cluster.api.jobs_namespace)
    assert pod.metadata.deletion_timestamp is None
    cancelled = cli_as(A, deployment.tree, "cancel", "--server", deployment.server_urls[1], job)
    assert cancelled.returncode == 0, cancelled.stderr


def _show(d: Deployed, user: User, job: str) -> dict[str, Any]:
    """`tokensvc job JOB -o json` as ``user``: the job's record."""
    shown = cli_as(user, d.tree, "job", "--server", d.server_urls[0], job, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    record: dict[str, Any] = json.loads(shown.stdout)
    return record


def test_a_user_follows_a_job_through_the_deployed_server(deployment: Deployed) -> None:
    d = deployment
    # Each line a second apart: --follow must hand them on while the job runs.
    script = "for i in 1 2 3; do echo line-$i; sleep 1; done; exit 3"
    answer = _submit(d, A, 0, "ml-team", script)
    job = answer["job"]["id"]
    # Like `kubectl logs`, a job with no container yet has no output to follow.
    deadline = time.monotonic() + JOB_TIMEOUT
    while _show(d, A, job)["phase"] == "Pending":
        assert time.monotonic() < deadline, _show(d, A, job)
    followed = cli_as(A, d.tree, "logs", "--server", d.server_urls[1], "--follow", job)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == ["line-1", "line-2", "line-3"]
    # --follow returned because the container ended; the record says how once
    # the kubelet's next status (its own sync, a moment later) has it.
    record = _show(d, A, job)
    while record["phase"] == "Running" and time.monotonic() < deadline:
        record = _show(d, A, job)
    assert (record["id"], record["phase"], record["exit_code"]) == (job, "Failed", 3), record
    listed = cli_as(A, d.tree, "jobs", "--server", d.server_urls[1], "-o", "json")
    assert listed.returncode == 0, listed.stderr
    (mine,) = [j for j in json.loads(listed.stdout) if j["id"] == job]
    assert (mine["phase"], mine["exit_code"]) == ("Failed", 3)
    # B is neither the owner nor a member of ml-team who may view others' jobs.
    refused = cli_as(B, d.tree, "logs", "--server", d.server_urls[0], job)
    assert refused.returncode != 0 and "line-1" not in refused.stdout, refused.stdout


def test_a_reader_that_stops_early_ends_logs_quietly(deployment: Deployed) -> None:
    # `tokensvc logs JOB | head -1`: more output than a pipe holds, and a
    # reader that goes away after the first line.
    d = deployment
    script = "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done"
    job = _submit(d, A, 0, "ml-team", script)["job"]["id"]
    _output(d, job)
    argv = [*A.setpriv(), sys.executable, "-m", "tokensvc", "logs", "--server", d.server_urls[1]]
    with subprocess.Popen(
        [*argv, job],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(d.tree),
        cwd=d.tree.base,
    ) as reader:
        assert reader.stdout is not None and reader.stderr is not None
        assert reader.stdout.readline() == b"line-0\n"
        reader.stdout.close()
        assert reader.wait(timeout=60) == 141
        assert reader.stderr.read() == b""  # no traceback, no message


def test_a_planted_symlink_does_not_carry_a_job_out_of_its_subpath(deployment: Deployed) -> None:
    # The policy sees a path inside A's own home and grants it; the kubelet
    # resolves the subPath on the node and refuses to mount where it leads.
    d = deployment
    answer = _submit(
        d, A, 1, "ml-team", "ls /nfs/home/10000/escape", f"/nfs/home/{A.uid}/escape:ro"
    )
    job = answer["job"]["id"]
    deadline = time.monotonic() + JOB_TIMEOUT
    record = _show(d, A, job)
    while record["reason"] != "CreateContainerConfigError":
        assert time.monotonic() < deadline, record
        assert record["phase"] == "Pending", record  # never ran
        record = _show(d, A, job)
    assert record["exit_code"] is None and not record.get("started"), record


def test_both_replicas_served_and_deleted_nothing(deployment: Deployed) -> None:
    # Runs last: every job above ran to its end on the node, and each
    # replica's reconciler, checking what the node reported, removed none.
    for url in deployment.server_urls:
        text = requests.get(f"{url}/metrics", timeout=10).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        decisions = sum(v for (name, _), v in samples.items() if name == "tokensvc_decisions_total")
        assert decisions > 0, url
        assert samples[("tokensvc_identity_mismatches_total", ())] == 0, url
        assert samples[("tokensvc_strict_unsupported_jobs_total", ())] == 0, url
