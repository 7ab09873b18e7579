"""Job pods for the real node, built by tokensvc's own launcher, and running them.

:func:`launcher_pod` feeds a decision straight into the launcher's pure
``build_manifest``, so the pod carries exactly the security context a
submit would get (runAsUser/runAsGroup, supplementalGroups, Strict, PVC
subPath mounts). The only change is ``imagePullPolicy: Never``: the images
are imported into the node, and nothing may be pulled.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from realnode import IMAGES, Cluster

from tokensvc.cluster.jobs import JobRequest, MountRequest
from tokensvc.cluster.launcher import build_manifest
from tokensvc.cluster.opa import Decision, GrantedMount, RunAs

POD_TIMEOUT = 120.0


@dataclass(frozen=True)
class Who:
    """The token claims the launcher reads (uid, gid, groups, token id)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    token_id: str


@dataclass(frozen=True)
class Mount:
    """A granted mount: a claim, a path in it, where the job sees it."""

    pvc: str
    sub_path: str
    path: str
    read_only: bool = False


def launcher_pod(
    uid: int,
    gid: int,
    groups: tuple[int, ...],
    script: str,
    *,
    image: str = IMAGES["job"],
    mounts: tuple[Mount, ...] = (),
    policy: str = "Strict",
) -> dict[str, Any]:
    """The launcher's pod for a job running `sh -c script` as uid:gid with groups."""
    who = Who(uid, gid, tuple(sorted({gid, *groups})), secrets.token_hex(16))
    decision = Decision(
        allow=True,
        run_as=RunAs(uid=uid, gid=gid),
        supplemental_groups=groups,
        mounts=tuple(
            GrantedMount(
                export=m.pvc, pvc=m.pvc, sub_path=m.sub_path, read_only=m.read_only, path=m.path
            )
            for m in mounts
        ),
    )
    request = JobRequest(
        project="e2e",
        image=image,
        # stderr joins stdout, so the output keeps the order the job wrote it in.
        command=("/bin/sh", "-c", "exec 2>&1; " + script),
        mounts=tuple(MountRequest(m.path, "ro" if m.read_only else "rw") for m in mounts),
    )
    pod = build_manifest(who, decision, request, decision_id=None)
    pod["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    if policy != "Strict":
        pod["spec"]["securityContext"]["supplementalGroupsPolicy"] = policy
    return pod


@dataclass(frozen=True)
class Ran:
    phase: str
    exit_code: int | None
    output: str
    status: Any  # the pod's last V1PodStatus


def _terminal(pod: Any) -> bool:
    if pod.status.phase in ("Succeeded", "Failed"):
        return True
    for cs in pod.status.container_statuses or []:
        waiting = cs.state.waiting
        if waiting is not None and waiting.reason in (
            "CreateContainerConfigError",
            "CreateContainerError",
            "ErrImageNeverPull",
        ):
            return True
    return False


def delete_and_wait(core: Any, name: str, namespace: str) -> None:
    """Delete the pod and wait until the API server has forgotten it (the kubelet is done)."""
    with contextlib.suppress(ApiException):
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    deadline = time.monotonic() + POD_TIMEOUT
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_pod(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        time.sleep(0.25)  # polling: the pod is gone once the kubelet is done with it
    raise AssertionError(f"pod {namespace}/{name} not gone after {POD_TIMEOUT}s")


def delete_pod(c: Cluster, name: str, namespace: str) -> None:
    """:func:`delete_and_wait` through the cluster's admin client."""
    delete_and_wait(c.core(), name, namespace)


def wait_ended(c: Cluster, name: str, namespace: str) -> Ran:
    """Wait until the pod has ended (or cannot start); its phase, exit code and output."""
    core = c.core()
    deadline = time.monotonic() + POD_TIMEOUT
    while True:
        pod = core.read_namespaced_pod(name, namespace)
        if _terminal(pod):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name} still {pod.status.phase}: {pod.status}")
        time.sleep(0.25)
    exit_code = None
    for cs in pod.status.container_statuses or []:
        if cs.state.terminated is not None:
            exit_code = cs.state.terminated.exit_code
    output = ""
    if exit_code is not None:
        output = core.read_namespaced_pod_log(name, namespace, container="job")
    return Ran(pod.status.phase, exit_code, output, pod.status)


def run_pod(c: Cluster, manifest: dict[str, Any]) -> Ran:
    """Create the pod, wait until it ends (or cannot start), return its output; delete it."""
    ns = manifest["metadata"]["namespace"]
    name = manifest["metadata"]["name"]
    c.core().create_namespaced_pod(ns, manifest)
    try:
        return wait_ended(c, name, ns)
    finally:
        delete_pod(c, name, ns)


def job_status_lines(output: str) -> dict[str, str]:
    """`Key:\tvalue` lines of /proc/self/status as printed by a job."""
    out = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in ("Uid", "Gid", "Groups"):
            out[key] = " ".join(value.split())
    return out


__all__ = [
    "Mount",
    "Ran",
    "delete_and_wait",
    "delete_pod",
    "job_status_lines",
    "launcher_pod",
    "run_pod",
    "wait_ended",
]
