"""Negative controls: the real API server enforces what the launcher relies on.

Pod Security "restricted" in the jobs namespace refuses root, missing
`drop: [ALL]` and inline NFS (so a launcher bug cannot launch such a pod),
and the launcher's identity, bound only by deploy/k8s's RBAC, can manage
pods in the jobs namespace and nothing else. Each negative case has a
positive twin, so a refusal can't come from something unrelated.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import kubernetes.client
import pytest
from kube import JOBS_NAMESPACE, SYSTEM_NAMESPACE, KubeAPI
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.usefixtures("deployed_rbac")


def restricted_pod(name: str | None = None) -> dict[str, Any]:
    """The smallest pod that satisfies Pod Security "restricted"."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name or f"probe-{secrets.token_hex(4)}"},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1001,
                "runAsGroup": 2001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "job",
                    "image": "registry.invalid/job:1",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def _root(pod: dict[str, Any]) -> None:
    pod["spec"]["securityContext"] = {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}}


def _root_container(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0


def _no_drop_all(pod: dict[str, Any]) -> None:
    del pod["spec"]["containers"][0]["securityContext"]["capabilities"]


def _inline_nfs(pod: dict[str, Any]) -> None:
    pod["spec"]["volumes"] = [
        {"name": "data", "nfs": {"server": "nfs1.cluster.local", "path": "/srv/projects"}}
    ]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/nfs/projects"}]


def _escalation(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True


def _with_pvc(pod: dict[str, Any]) -> None:
    pod["spec"]["volumes"] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "nfs-projects", "readOnly": True}}
    ]
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/nfs/projects/ml", "subPath": "ml", "readOnly": True}
    ]


def _absent(core: kubernetes.client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, JOBS_NAMESPACE)
    except ApiException as err:
        return err.status == 404
    return False


def test_jobs_namespace_enforces_restricted(kube_api: KubeAPI) -> None:
    labels = kube_api.core().read_namespace(JOBS_NAMESPACE).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("variant", [None, _with_pvc], ids=["plain", "pvc-subpath"])
def test_restricted_pod_is_admitted(kube_api: KubeAPI, variant: Any) -> None:
    """Positive control: the same pod, without the violation, is stored."""
    core = kube_api.core("launcher")
    pod = restricted_pod()
    if variant is not None:
        variant(pod)
    created = core.create_namespaced_pod(JOBS_NAMESPACE, pod)
    try:
        assert created.spec.security_context.run_as_user == 1001
    finally:
        core.delete_namespaced_pod(pod["metadata"]["name"], JOBS_NAMESPACE, grace_period_seconds=0)


@pytest.mark.parametrize(
    ("mutate", "violation"),
    [
        (_root, "runAsNonRoot != true"),
        (_root_container, "runAsUser=0"),
        (_no_drop_all, 'must set securityContext.capabilities.drop=["ALL"]'),
        (_inline_nfs, 'restricted volume types (volume "data" uses restricted volume type "nfs")'),
        (_escalation, "allowPrivilegeEscalation != false"),
    ],
    ids=["pod-runAsUser-0", "container-runAsUser-0", "no-drop-ALL", "inline-nfs", "escalation"],
)
@pytest.mark.parametrize("who", ["admin", "launcher"])
def test_pod_security_refuses(kube_api: KubeAPI, who: str, mutate: Any, violation: str) -> None:
    """Even system:masters cannot bypass Pod Security admission in the jobs namespace."""
    pod = restricted_pod()
    mutate(pod)
    with pytest.raises(ApiException) as caught:
        kube_api.core(who).create_namespaced_pod(JOBS_NAMESPACE, pod)
    assert caught.value.status == 403
    message = json.loads(caught.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert violation in message
    assert _absent(kube_api.core(), pod["metadata"]["name"])


# --- RBAC of the launcher's identity (deploy/k8s/rbac.yaml) ---------------------------


def _can(
    api: KubeAPI, who: str, verb: str, resource: str, namespace: str | None, **kw: str
) -> bool:
    review = kubernetes.client.V1SelfSubjectAccessReview(
        spec=kubernetes.client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=kubernetes.client.V1ResourceAttributes(
                verb=verb, resource=resource, namespace=namespace, **kw
            )
        )
    )
    with api.api_client(who) as client:
        authz = kubernetes.client.AuthorizationV1Api(client)
        allowed: bool = authz.create_self_subject_access_review(review).status.allowed
    return allowed


def test_launcher_manages_pods_in_jobs_namespace(kube_api: KubeAPI) -> None:
    core = kube_api.core("launcher")
    pod = restricted_pod()
    name = pod["metadata"]["name"]
    core.create_namespaced_pod(JOBS_NAMESPACE, pod)
    assert core.read_namespaced_pod(name, JOBS_NAMESPACE).metadata.name == name
    assert name in {p.metadata.name for p in core.list_namespaced_pod(JOBS_NAMESPACE).items}
    patched = core.patch_namespaced_pod(
        name, JOBS_NAMESPACE, {"metadata": {"annotations": {"tokensvc.io/priority": "5"}}}
    )
    assert patched.metadata.annotations["tokensvc.io/priority"] == "5"
    core.delete_namespaced_pod(name, JOBS_NAMESPACE, grace_period_seconds=0)
    assert _absent(kube_api.core(), name)


@pytest.mark.parametrize("namespace", [SYSTEM_NAMESPACE, "default", "kube-system"])
def test_launcher_cannot_create_pods_elsewhere(kube_api: KubeAPI, namespace: str) -> None:
    with pytest.raises(ApiException) as caught:
        kube_api.core("launcher").create_namespaced_pod(namespace, restricted_pod())
    assert caught.value.status == 403


def test_launcher_cannot_create_persistent_volumes(kube_api: KubeAPI) -> None:
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"probe-{secrets.token_hex(4)}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "nfs": {"server": "nfs1.cluster.local", "path": "/"},
        },
    }
    with pytest.raises(ApiException) as caught:
        kube_api.core("launcher").create_persistent_volume(pv)
    assert caught.value.status == 403
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "probe"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    with pytest.raises(ApiException) as caught:
        kube_api.core("launcher").create_namespaced_persistent_volume_claim(JOBS_NAMESPACE, pvc)
    assert caught.value.status == 403


@pytest.mark.parametrize("namespace", [JOBS_NAMESPACE, SYSTEM_NAMESPACE])
def test_launcher_cannot_read_secrets(kube_api: KubeAPI, namespace: str) -> None:
    core = kube_api.core("admin")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"probe-{secrets.token_hex(4)}"},
        "stringData": {"k": "v"},
    }
    core.create_namespaced_secret(namespace, secret)
    try:
        launcher = kube_api.core("launcher")
        for call in (
            lambda: launcher.read_namespaced_secret(secret["metadata"]["name"], namespace),
            lambda: launcher.list_namespaced_secret(namespace),
        ):
            with pytest.raises(ApiException) as caught:
                call()
            assert caught.value.status == 403
    finally:
        core.delete_namespaced_secret(secret["metadata"]["name"], namespace)


@pytest.mark.parametrize(
    ("verb", "resource", "subresource"),
    [
        ("create", "pods", "exec"),
        ("create", "pods", "attach"),
        ("create", "pods", "eviction"),
        ("update", "pods", ""),
        ("watch", "pods", ""),
        ("deletecollection", "pods", ""),
        ("create", "serviceaccounts", "token"),
        ("watch", "configmaps", ""),
        ("update", "configmaps", ""),
        ("get", "secrets", ""),
        ("create", "roles", ""),
        ("list", "nodes", ""),
        ("patch", "nodes", "status"),
    ],
)
def test_launcher_has_nothing_more(
    kube_api: KubeAPI, verb: str, resource: str, subresource: str
) -> None:
    group = "rbac.authorization.k8s.io" if resource == "roles" else ""
    assert not _can(
        kube_api, "launcher", verb, resource, JOBS_NAMESPACE, subresource=subresource, group=group
    )


def test_launcher_rules_are_exactly_the_role(kube_api: KubeAPI) -> None:
    """SelfSubjectRulesReview: pods, their logs, token ConfigMaps, a node read, what all have."""
    review = kubernetes.client.V1SelfSubjectRulesReview(
        spec=kubernetes.client.V1SelfSubjectRulesReviewSpec(namespace=JOBS_NAMESPACE)
    )
    with kube_api.api_client("launcher") as client:
        status = (
            kubernetes.client.AuthorizationV1Api(client)
            .create_self_subject_rules_review(review)
            .status
        )
    granted = {
        (group, resource, verb)
        for rule in status.resource_rules
        for group in rule.api_groups or [""]
        for resource in rule.resources or []
        for verb in rule.verbs
    }
    # system:basic-user: every authenticated user may ask who it is and what it may do.
    everyone = {
        ("authentication.k8s.io", "selfsubjectreviews", "create"),
        ("authorization.k8s.io", "selfsubjectaccessreviews", "create"),
        ("authorization.k8s.io", "selfsubjectrulesreviews", "create"),
    }
    verbs = ("create", "get", "list", "delete", "patch")
    pods = {("", "pods", v) for v in verbs} | {("", "pods/log", "get")}
    records = {("", "configmaps", v) for v in verbs}
    nodes = {("", "nodes", "get")}  # cluster-wide: is the node a job started on Strict-capable?
    assert granted == pods | records | nodes | everyone


def test_rbac_is_what_grants(kube_api: KubeAPI) -> None:
    """Control: an identity without the RoleBinding cannot create the same pod."""
    with pytest.raises(ApiException) as caught:
        kube_api.core("nobody").create_namespaced_pod(JOBS_NAMESPACE, restricted_pod())
    assert caught.value.status == 403
    assert _can(kube_api, "launcher", "create", "pods", JOBS_NAMESPACE)
    assert not _can(kube_api, "nobody", "create", "pods", JOBS_NAMESPACE)
