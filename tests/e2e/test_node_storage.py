"""On the storage volumes, the kernel keeps each job to what its uid and groups may touch.

The node has no NFS client, so local PersistentVolumes stand in for the NFS
exports, under the claim names deploy/k8s gives them (nfs-home,
nfs-projects), with real owners and modes:

    home/alice     20001:20001 0700   alice's own tree
    home/bob       20002:20002 0700   bob's
    projects/p1    0:30001     2770   shared with group 30001 (alice is in it)

Each job prints what it tried and the shell's answer; the assertions read the
job's own output. A symlink alice plants in her tree, pointing out of the
volume, must not become the job's subPath mount.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobpods import Mount, launcher_pod, run_pod
from kubernetes.client.exceptions import ApiException
from realnode import Cluster

pytestmark = pytest.mark.root

ALICE, BOB, PROJECT_GID = 20001, 20002, 30001
EXPORTS = ("home", "projects")
OUTSIDE_MARKER = "outside-the-volume"


def _pv(c: Cluster, export: str, path: Path) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"tokensvc-nfs-{export}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "local": {"path": str(path)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [c.node_name],
                                }
                            ]
                        }
                    ]
                }
            },
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": c.api.jobs_namespace,
                "name": f"nfs-{export}",
            },
        },
    }


def _pvc(c: Cluster, export: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"nfs-{export}", "namespace": c.api.jobs_namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": f"tokensvc-nfs-{export}",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def _mkdir(path: Path, uid: int, gid: int, mode: int) -> None:
    path.mkdir(parents=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _write(path: Path, text: str, uid: int, gid: int, mode: int) -> None:
    path.write_text(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


@pytest.fixture(scope="module")
def exports(cluster: Cluster) -> Iterator[Path]:
    """The export trees, their PVs and bound PVCs; all removed after the module."""
    top = cluster.root / "exports"
    _mkdir(top / "home", 0, 0, 0o755)
    _mkdir(top / "home" / "alice", ALICE, ALICE, 0o700)
    _write(top / "home" / "alice" / "notes.txt", "alice's notes\n", ALICE, ALICE, 0o600)
    _mkdir(top / "home" / "bob", BOB, BOB, 0o700)
    _write(top / "home" / "bob" / "secret.txt", "bob's secret\n", BOB, BOB, 0o600)
    _mkdir(top / "projects", 0, 0, 0o755)
    _mkdir(top / "projects" / "p1", 0, PROJECT_GID, 0o2770)
    _write(top / "projects" / "p1" / "data.txt", "shared data\n", ALICE, PROJECT_GID, 0o660)
    # Outside every volume: what an escaping symlink would reach.
    _mkdir(top / "outside", 0, 0, 0o755)
    _write(top / "outside" / "marker", OUTSIDE_MARKER + "\n", 0, 0, 0o644)
    # Planted by alice in her own tree (she owns the link), pointing out.
    escape = top / "home" / "alice" / "escape"
    escape.symlink_to(top / "outside")
    os.lchown(escape, ALICE, ALICE)
    relative = top / "home" / "alice" / "up"
    relative.symlink_to("../../outside")
    os.lchown(relative, ALICE, ALICE)

    core = cluster.core()
    for export in EXPORTS:
        core.create_persistent_volume(_pv(cluster, export, top / export))
        core.create_namespaced_persistent_volume_claim(
            cluster.api.jobs_namespace, _pvc(cluster, export)
        )
    deadline = time.monotonic() + 60
    for export in EXPORTS:
        while (
            core.read_namespaced_persistent_volume_claim(
                f"nfs-{export}", cluster.api.jobs_namespace
            ).status.phase
            != "Bound"
        ):
            assert time.monotonic() < deadline, f"nfs-{export} not bound"
            time.sleep(0.25)
    yield top
    for export in EXPORTS:
        core.delete_namespaced_persistent_volume_claim(f"nfs-{export}", cluster.api.jobs_namespace)
        core.delete_persistent_volume(f"tokensvc-nfs-{export}")
    deadline = time.monotonic() + 60
    for export in EXPORTS:
        while True:
            try:
                core.read_persistent_volume(f"tokensvc-nfs-{export}")
            except ApiException as err:
                if err.status == 404:
                    break
                raise
            assert time.monotonic() < deadline, f"tokensvc-nfs-{export} not deleted"
            time.sleep(0.25)
    shutil.rmtree(top)


def _alice(script: str, *mounts: Mount) -> dict[str, object]:
    return launcher_pod(ALICE, ALICE, (PROJECT_GID,), script, mounts=mounts)


def test_user_reads_and_writes_own_tree(cluster: Cluster, exports: Path) -> None:
    pod = _alice(
        "cat /home/alice/notes.txt && echo written > /home/alice/new.txt && "
        "cat /home/alice/new.txt",
        Mount("nfs-home", "alice", "/home/alice"),
    )
    ran = run_pod(cluster, pod)
    assert (ran.phase, ran.exit_code) == ("Succeeded", 0), ran.output
    assert ran.output == "alice's notes\nwritten\n"
    new = exports / "home" / "alice" / "new.txt"
    assert (new.stat().st_uid, new.stat().st_gid) == (ALICE, ALICE)
    new.unlink()


def test_other_users_tree_is_permission_denied(cluster: Cluster, exports: Path) -> None:
    pod = _alice(
        "cat /home/bob/secret.txt; echo rc=$?; ls /home/bob; echo rc=$?; "
        "touch /home/bob/x; echo rc=$?",
        Mount("nfs-home", "", "/home"),
    )
    ran = run_pod(cluster, pod)
    assert ran.phase == "Succeeded", ran.output
    assert "bob's secret" not in ran.output
    lines = ran.output.splitlines()
    assert lines.count("rc=1") == 3, ran.output
    assert sum("Permission denied" in line for line in lines) == 3, ran.output


def test_group_shared_tree_reads_and_writes(cluster: Cluster, exports: Path) -> None:
    pod = _alice(
        "cat /projects/p1/data.txt && echo more >> /projects/p1/data.txt && "
        "echo new > /projects/p1/by-alice && stat -c '%u %g' /projects/p1/by-alice",
        Mount("nfs-projects", "p1", "/projects/p1"),
    )
    ran = run_pod(cluster, pod)
    assert (ran.phase, ran.exit_code) == ("Succeeded", 0), ran.output
    # setgid directory: new files get the project's group.
    assert ran.output == f"shared data\n{ALICE} {PROJECT_GID}\n"
    (exports / "projects" / "p1" / "by-alice").unlink()
    _write(exports / "projects" / "p1" / "data.txt", "shared data\n", ALICE, PROJECT_GID, 0o660)


def test_group_tree_without_the_group_is_denied(cluster: Cluster, exports: Path) -> None:
    # Bob is not in 30001: the same mount gives him nothing.
    pod = launcher_pod(
        BOB,
        BOB,
        (),
        "cat /projects/p1/data.txt; echo rc=$?",
        mounts=(Mount("nfs-projects", "p1", "/projects/p1", read_only=True),),
    )
    ran = run_pod(cluster, pod)
    assert ran.phase == "Succeeded", ran.output
    assert "shared data" not in ran.output
    assert "Permission denied" in ran.output and "rc=1" in ran.output


def test_read_only_grant_cannot_write(cluster: Cluster, exports: Path) -> None:
    # Alice could write p1 (group 30001, mode 2770); the read-only grant wins.
    pod = _alice(
        "cat /projects/p1/data.txt; echo x >> /projects/p1/data.txt; echo rc=$?; "
        "touch /projects/p1/new; echo rc=$?",
        Mount("nfs-projects", "p1", "/projects/p1", read_only=True),
    )
    ran = run_pod(cluster, pod)
    assert ran.phase == "Succeeded", ran.output
    assert ran.output.startswith("shared data\n")
    assert ran.output.count("Read-only file system") == 2, ran.output
    assert ran.output.count("rc=1") == 2, ran.output
    assert (exports / "projects" / "p1" / "data.txt").read_text() == "shared data\n"
    assert not (exports / "projects" / "p1" / "new").exists()


@pytest.mark.parametrize("link", ["escape", "up"])
def test_planted_symlink_does_not_escape_the_subpath(
    cluster: Cluster, exports: Path, link: str
) -> None:
    # The kubelet resolves a subPath inside the volume (the CVE-2021-25741
    # fix): a link pointing out of it must fail the container, never mount
    # what it points at.
    pod = _alice("cat /data/marker; ls /data", Mount("nfs-home", f"alice/{link}", "/data"))
    ran = run_pod(cluster, pod)
    assert OUTSIDE_MARKER not in ran.output
    assert ran.exit_code is None, ran.output  # never started
    (cs,) = ran.status.container_statuses
    assert cs.state.waiting.reason == "CreateContainerConfigError", cs.state
