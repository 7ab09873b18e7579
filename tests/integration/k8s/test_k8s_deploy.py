"""deploy/k8s as the API server sees it: every rendered object is accepted by a
server-side dry-run apply (schema, defaulting, admission, Pod Security warn
mode) and passes our conftest deployment rules."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kube import BIN_DIR, REPO, SYSTEM_NAMESPACE, KubeAPI, apply, resource_path

pytestmark = pytest.mark.usefixtures("deployed_rbac")

Rendered = tuple[Path, list[dict[str, Any]]]


def _ids(docs: list[dict[str, Any]]) -> list[str]:
    return [
        f"{d['kind']}/{d['metadata'].get('namespace', '-')}/{d['metadata']['name']}" for d in docs
    ]


def test_base_has_every_part(rendered_deploy: Rendered) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered_deploy[1]}
    for expected in [
        ("Namespace", "tokensvc"),
        ("Namespace", "wsc-jobs"),
        ("ServiceAccount", "tokensvc-launcher"),
        ("Role", "tokensvc-launcher"),
        ("RoleBinding", "tokensvc-launcher"),
        ("ClusterRole", "tokensvc-launcher-nodes"),
        ("ClusterRoleBinding", "tokensvc-launcher-nodes"),
        ("Deployment", "tokensvc-server"),
        ("Service", "tokensvc-server"),
        ("NetworkPolicy", "tokensvc-server"),
    ]:
        assert expected in kinds
    assert any(k == "PersistentVolume" for k, _ in kinds)
    assert any(k == "ConfigMap" and n.startswith("tokensvc-opa-config-") for k, n in kinds)


def test_server_side_dry_run_accepts_every_object(
    kube_api: KubeAPI, rendered_deploy: Rendered
) -> None:
    failures = []
    for doc, ident in zip(rendered_deploy[1], _ids(rendered_deploy[1]), strict=True):
        resp = apply(kube_api, doc, dry_run=True, check=False)
        if resp.status_code not in (200, 201):
            failures.append(f"{ident}: {resp.status_code} {resp.json().get('message')}")
        elif "Warning" in resp.headers:
            # Pod Security warn=restricted reports a violating pod template here.
            failures.append(f"{ident}: warning {resp.headers['Warning']}")
    assert failures == []


def test_dry_run_reports_a_violating_pod_template(
    kube_api: KubeAPI, rendered_deploy: Rendered
) -> None:
    """Control for the check above: a root template does draw a Pod Security warning."""
    deployment = copy.deepcopy(next(d for d in rendered_deploy[1] if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    resp = apply(kube_api, deployment, dry_run=True)
    warning = resp.headers.get("Warning", "")
    assert "would violate PodSecurity" in warning
    assert "runAsUser=0" in warning


def test_dry_run_persists_nothing(kube_api: KubeAPI, rendered_deploy: Rendered) -> None:
    deployment = next(d for d in rendered_deploy[1] if d["kind"] == "Deployment")
    apply(kube_api, deployment, dry_run=True)
    with kube_api.session() as s:
        assert (
            s.get(kube_api.url + resource_path(kube_api, deployment), timeout=10).status_code == 404
        )


def test_server_pod_template_is_admitted_under_restricted(
    kube_api: KubeAPI, rendered_deploy: Rendered
) -> None:
    """Enforce, not just warn: the Deployment's pod, created (dry-run) as a Pod."""
    deployment = next(d for d in rendered_deploy[1] if d["kind"] == "Deployment")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "server-template-probe", "namespace": SYSTEM_NAMESPACE},
        "spec": deployment["spec"]["template"]["spec"],
    }
    resp = apply(kube_api, pod, dry_run=True)
    assert resp.status_code in (200, 201)
    assert "Warning" not in resp.headers
    assert json.loads(resp.text)["spec"]["securityContext"]["runAsNonRoot"] is True


def test_conftest_deploy_rules_pass(rendered_deploy: Rendered) -> None:
    result = subprocess.run(
        [
            str(BIN_DIR / "conftest"),
            "test",
            "--no-color",
            "--policy",
            str(REPO / "policies" / "conftest"),
            "--namespace",
            "conftest.deploy",
            str(rendered_deploy[0]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failures" in result.stdout
