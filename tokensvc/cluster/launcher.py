"""Launcher: turn an allowed decision into a pod spec (pure) and hand it to a submitter.

:func:`build_pod` is a pure function of the token's identity, OPA's decision
and the validated request: no I/O, no clock, no environment. It is
:func:`build_manifest` (the same pod as a plain dict, which the server's hot
path submits) read through the Kubernetes client's ``V1Pod`` model. Both
refuse to build anything the invariants forbid even if a policy bug allowed it (uid or
gid 0, a run-as uid other than the token's, a gid the token does not carry,
more than 16 groups), so a wrong decision can at worst fail a submit, never
launch as someone else.

Every pod is Pod Security "restricted": non-root with the decided uid/gid,
``supplementalGroupsPolicy: Strict`` (the image's /etc/group adds nothing),
no privilege escalation, all capabilities dropped, RuntimeDefault seccomp,
no service-account token, and NFS only through admin-provisioned PVCs with
a subPath (inline ``nfs:`` volumes are not allowed under "restricted").

The submitters live in :mod:`tokensvc.cluster.spool` and :mod:`tokensvc.cluster.kube`.
"""

from __future__ import annotations

import posixpath
from typing import Any, Final, Protocol

from kubernetes import client as k8s

from tokensvc.cluster.jobs import JobRequest, job_name
from tokensvc.cluster.opa import MAX_SUPPLEMENTAL_GROUPS, Decision, GrantedMount

DEFAULT_NAMESPACE: Final = "wsc-jobs"
CONTAINER_NAME: Final = "job"
# Extended resource a wafer-scale system is scheduled as (advertised by the
# cluster's device plugin).
SYSTEMS_RESOURCE: Final = "tokensvc.io/systems"

LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "tokensvc"
LABEL_OWNER_UID: Final = "tokensvc.io/owner-uid"
LABEL_PROJECT: Final = "tokensvc.io/project"
LABEL_TOKEN_ID: Final = "tokensvc.io/token-id"  # noqa: S105 (a label key, not a secret)
ANNOTATION_DECISION_ID: Final = "tokensvc.io/decision-id"
ANNOTATION_PRIORITY: Final = "tokensvc.io/priority"
DEFAULT_PRIORITY: Final = 0


class Identity(Protocol):
    """The token claims the launcher needs (``tokensvc.core.claims.Claims`` fits)."""

    @property
    def uid(self) -> int: ...

    @property
    def gid(self) -> int: ...

    @property
    def groups(self) -> tuple[int, ...]: ...

    @property
    def token_id(self) -> str: ...


class LaunchRefused(ValueError):
    """The decision cannot be turned into a pod without breaking an invariant."""


def _check_sub_path(sub_path: str) -> None:
    # The API server refuses these too; refusing here keeps the pure function
    # honest for the spool submitter, which has no API server behind it.
    if sub_path.startswith("/") or ".." in sub_path.split("/") or "\x00" in sub_path:
        raise LaunchRefused(f"mount sub_path {sub_path!r} must be relative and without '..'")


def _norm(path: str) -> str:
    path = posixpath.normpath(path)
    return "/" + path.lstrip("/")  # POSIX keeps a leading "//"; a mount path never needs it


def _mount_plan(decision: Decision, request: JobRequest) -> list[tuple[GrantedMount, str, bool]]:
    """(grant, mount path, read-only) for each granted mount, checked against the request.

    The policy may only narrow what was asked: a grant for a path nobody
    requested is refused, and a path requested read-only stays read-only
    whatever the grant says.
    """
    requested: dict[str, str] = {}
    for m in request.mounts:
        requested[_norm(m.path)] = "ro" if requested.get(_norm(m.path)) == "ro" else m.mode
    plan: list[tuple[GrantedMount, str, bool]] = []
    for i, granted in enumerate(decision.mounts):
        if granted.path is not None:
            path = _norm(granted.path)
        elif len(decision.mounts) == len(request.mounts):
            # Policies that do not echo the path grant mounts in request order.
            path = _norm(request.mounts[i].path)
        else:
            raise LaunchRefused("decision mounts cannot be matched to requested paths")
        if path == "/":
            raise LaunchRefused("a mount path must be below /")
        if path not in requested:
            raise LaunchRefused(f"decision mounts {path!r}, which was not requested")
        plan.append((granted, path, granted.read_only or requested[path] == "ro"))
    if len({path for _, path, _ in plan}) != len(plan):
        raise LaunchRefused("two mounts share one path")
    return plan


def _volumes(
    plan: list[tuple[GrantedMount, str, bool]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # One volume per PVC (in first-use order); each granted path is a subPath
    # mount of it. The volume is read-only unless some mount of it is rw.
    claims: dict[str, str] = {}
    writable: set[str] = set()
    volume_mounts: list[dict[str, Any]] = []
    for granted, path, read_only in plan:
        _check_sub_path(granted.sub_path)
        name = claims.setdefault(granted.pvc, f"nfs-{len(claims)}")
        if not read_only:
            writable.add(granted.pvc)
        mount: dict[str, Any] = {"mountPath": path, "name": name, "readOnly": read_only}
        if granted.sub_path:
            mount["subPath"] = granted.sub_path
        volume_mounts.append(mount)
    volumes = [
        {
            "name": name,
            "persistentVolumeClaim": {"claimName": pvc, "readOnly": pvc not in writable},
        }
        for pvc, name in claims.items()
    ]
    return volumes, volume_mounts


def effective_priority(decision: Decision, request: JobRequest) -> int:
    """The policy's priority wins; else the requested one; else the default."""
    if decision.priority is not None:
        return decision.priority
    if request.priority is not None:
        return request.priority
    return DEFAULT_PRIORITY


def build_manifest(
    identity: Identity,
    decision: Decision,
    request: JobRequest,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    decision_id: str | None,
) -> dict[str, Any]:
    """The pod for an allowed submit decision as a manifest dict. Pure; :class:`LaunchRefused`.

    camelCase keys, no nulls, keys in the order the ``V1Pod`` model writes
    them: exactly ``pod_manifest(build_pod(...))`` (the tests check it key for
    key). The server's hot path: building the ~14 pydantic models of a pod
    costs more than everything else in a submit but the HTTP layer and OPA.
    """
    if not decision.allow:
        raise LaunchRefused("decision does not allow this job")
    run_as = decision.run_as
    if run_as is None:
        raise LaunchRefused("decision has no run_as")
    if run_as.uid != identity.uid:
        raise LaunchRefused("decision would run the job as another user")
    if run_as.uid <= 0 or run_as.gid <= 0:
        raise LaunchRefused("jobs never run as uid 0 or gid 0")
    groups = sorted(set(decision.supplemental_groups))
    if any(g <= 0 for g in groups):
        raise LaunchRefused("supplemental groups never include gid 0")
    if len(groups) > MAX_SUPPLEMENTAL_GROUPS:
        raise LaunchRefused(f"more than {MAX_SUPPLEMENTAL_GROUPS} supplemental groups")
    # The kernel's view on the user node bounds every gid the job may carry:
    # policy can only narrow it (no input of the caller names a group), never add one.
    member = {identity.gid, *identity.groups}
    if run_as.gid not in member or not member.issuperset(groups):
        raise LaunchRefused("decision grants a group the token's user is not in")
    name = job_name(identity.token_id)
    volumes, volume_mounts = _volumes(_mount_plan(decision, request))

    annotations = {ANNOTATION_PRIORITY: str(effective_priority(decision, request))}
    if decision_id is not None:
        annotations[ANNOTATION_DECISION_ID] = decision_id
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_OWNER_UID: str(identity.uid),
        LABEL_PROJECT: request.project,
        LABEL_TOKEN_ID: identity.token_id,
    }
    systems = str(request.systems)
    container: dict[str, Any] = {
        "command": list(request.command),
        "image": request.image,
        "name": CONTAINER_NAME,
        "resources": {
            "limits": {SYSTEMS_RESOURCE: systems},
            "requests": {SYSTEMS_RESOURCE: systems},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if volume_mounts:
        container["volumeMounts"] = volume_mounts
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "containers": [container],
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": {
            "runAsGroup": run_as.gid,
            "runAsNonRoot": True,
            "runAsUser": run_as.uid,
            "seccompProfile": {"type": "RuntimeDefault"},
            "supplementalGroups": groups,
            "supplementalGroupsPolicy": "Strict",
        },
    }
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": annotations,
            "labels": labels,
            "name": name,
            "namespace": namespace,
        },
        "spec": spec,
    }


def build_pod(
    identity: Identity,
    decision: Decision,
    request: JobRequest,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    decision_id: str | None,
) -> k8s.V1Pod:
    """The pod for an allowed submit decision as the client's typed ``V1Pod``. Pure.

    :func:`build_manifest` read through the official model, which checks
    every field's type and refuses unknown fields; raises
    :class:`LaunchRefused` as that does.
    """
    manifest = build_manifest(
        identity, decision, request, namespace=namespace, decision_id=decision_id
    )
    pod: k8s.V1Pod = k8s.V1Pod.model_validate(manifest)
    return pod


def pod_manifest(pod: k8s.V1Pod) -> dict[str, Any]:
    """The pod as a plain JSON/YAML-ready dict (camelCase keys, no nulls).

    Equal to ``ApiClient().sanitize_for_serialization(pod)`` (the tests check
    it), through the model's own serializer, which is about 3x faster.
    """
    manifest: dict[str, Any] = pod.model_dump(by_alias=True, exclude_none=True, mode="json")
    return manifest


__all__ = [
    "ANNOTATION_DECISION_ID",
    "ANNOTATION_PRIORITY",
    "DEFAULT_NAMESPACE",
    "LABEL_MANAGED_BY",
    "LABEL_OWNER_UID",
    "LABEL_PROJECT",
    "LABEL_TOKEN_ID",
    "MANAGED_BY",
    "SYSTEMS_RESOURCE",
    "Identity",
    "LaunchRefused",
    "build_manifest",
    "build_pod",
    "effective_priority",
    "pod_manifest",
]
