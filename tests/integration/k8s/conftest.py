"""Fixtures for tests against a real kube-apiserver (see kube.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube import BIN_DIR, REPO, KubeAPI, apply, ensure_binaries, running_control_plane

DEPLOY_BASE = REPO / "deploy" / "k8s"


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPI]:
    """etcd + kube-apiserver for the whole session, stopped at the end.

    Jobs namespace labelled Pod Security "restricted", with its default
    ServiceAccount; identities "admin", "launcher" (the tokensvc-launcher
    ServiceAccount user) and "nobody". Builds the binaries if missing.
    """
    with running_control_plane(tmp_path_factory.mktemp("kube")) as api:
        yield api


@pytest.fixture(scope="session")
def rendered_deploy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """`kustomize build deploy/k8s`: the YAML file and its documents."""
    ensure_binaries()
    out = subprocess.run(
        [str(BIN_DIR / "kustomize"), "build", str(DEPLOY_BASE)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = tmp_path_factory.mktemp("deploy") / "rendered.yaml"
    path.write_text(out)
    return path, [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session")
def deployed_rbac(kube_api: KubeAPI, rendered_deploy: tuple[Path, list[dict[str, Any]]]) -> None:
    """The namespaces, ServiceAccounts and RBAC of deploy/k8s, applied for real."""
    kinds = {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    }
    for doc in rendered_deploy[1]:
        if doc["kind"] in kinds:
            apply(kube_api, doc)
