"""A job runs as exactly the uid, gid and groups its pod gives, as the kernel sees it.

Each job prints `id` and its own /proc/self/status; the assertions read that
output, not the pod spec. The job image's /etc/group adds group 4242 to its
user (uid 10000): with `supplementalGroupsPolicy: Strict` (what tokensvc's
launcher sets) the job must not get it, with `Merge` it does (KEP-3619).
"""

from __future__ import annotations

import pytest
from jobpods import job_status_lines, launcher_pod, run_pod
from realnode import IMAGE_EXTRA_GID, IMAGE_USER_UID, IMAGES, Cluster

pytestmark = pytest.mark.root

SHOW_IDENTITY = "id; cat /proc/self/status"


def _groups(output: str) -> set[int]:
    return {int(g) for g in job_status_lines(output)["Groups"].split()}


def test_node_reports_supplemental_groups_policy(cluster: Cluster) -> None:
    # The launcher relies on Strict only where the node says it enforces it.
    with cluster.api.session("admin") as s:
        node = s.get(f"{cluster.api.url}/api/v1/nodes/{cluster.node_name}", timeout=10).json()
    assert node["status"].get("features", {}).get("supplementalGroupsPolicy") is True, node[
        "status"
    ].get("features")


def test_strict_job_runs_exactly_as_given(cluster: Cluster) -> None:
    pod = launcher_pod(20001, 20001, (30001, 30002), SHOW_IDENTITY)
    ran = run_pod(cluster, pod)
    assert (ran.phase, ran.exit_code) == ("Succeeded", 0), ran.output
    status = job_status_lines(ran.output)
    # real, effective, saved and filesystem ids, all four.
    assert status["Uid"] == "20001 20001 20001 20001"
    assert status["Gid"] == "20001 20001 20001 20001"
    assert _groups(ran.output) == {20001, 30001, 30002}
    assert ran.output.splitlines()[0] == "uid=20001 gid=20001 groups=20001,30001,30002"


def test_node_reports_the_identity_it_ran(cluster: Cluster) -> None:
    # What the server can compare with its decision once the container started.
    ran = run_pod(cluster, launcher_pod(20001, 20001, (30001,), SHOW_IDENTITY))
    assert ran.phase == "Succeeded", ran.output
    (cs,) = ran.status.container_statuses
    linux = cs.user.linux
    assert (linux.uid, linux.gid) == (20001, 20001)
    assert set(linux.supplemental_groups) == {20001, 30001}
    assert set(linux.supplemental_groups) == _groups(ran.output)


def test_strict_ignores_the_image_group_file(cluster: Cluster) -> None:
    pod = launcher_pod(
        IMAGE_USER_UID, IMAGE_USER_UID, (30001,), SHOW_IDENTITY, image=IMAGES["job-extra-group"]
    )
    ran = run_pod(cluster, pod)
    assert ran.phase == "Succeeded", ran.output
    assert _groups(ran.output) == {IMAGE_USER_UID, 30001}


def test_merge_picks_up_the_image_group_file(cluster: Cluster) -> None:
    # The control for the test above: the same pod under Merge does get the
    # image's group, so the image really carries one to ignore.
    pod = launcher_pod(
        IMAGE_USER_UID,
        IMAGE_USER_UID,
        (30001,),
        SHOW_IDENTITY,
        image=IMAGES["job-extra-group"],
        policy="Merge",
    )
    ran = run_pod(cluster, pod)
    assert ran.phase == "Succeeded", ran.output
    assert _groups(ran.output) == {IMAGE_USER_UID, 30001, IMAGE_EXTRA_GID}
