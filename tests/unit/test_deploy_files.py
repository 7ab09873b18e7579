"""deploy/k8s stays in step with the rest of the repository (no cluster needed).

The rendered manifests are checked against a real API server in
tests/integration/k8s; these are the cross-file facts a server cannot know.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tokensvc.cluster.devstack import OPA_ENV
from tokensvc.core.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "k8s"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def test_server_settings_file_loads() -> None:
    settings = load_settings(str(DEPLOY / "tokensvc.conf"), env={})
    assert settings.server.submitter == "kubernetes"
    assert settings.server.namespace == "wsc-jobs"
    assert settings.server.opa_url == "http://127.0.0.1:8181"
    assert settings.keyring == "/etc/tokensvc/keyring"


def test_one_pv_and_claim_per_policy_export() -> None:
    exports = yaml.safe_load(
        (ROOT / "policies" / "data" / "wsc" / "exports" / "data.yaml").read_text()
    )
    docs = _docs("nfs-volumes.yaml")
    pvs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolume"}
    pvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert len(pvs) == len(pvcs) == len(exports)
    for spec in exports.values():
        pvc = pvcs[spec["pvc"]]
        assert pvc["metadata"]["namespace"] == "wsc-jobs"
        pv = pvs[pvc["spec"]["volumeName"]]
        assert pv["spec"]["nfs"] == {"server": spec["server"], "path": spec["export"]}
        assert pv["spec"]["claimRef"]["name"] == spec["pvc"]
        assert pv["spec"]["claimRef"]["namespace"] == "wsc-jobs"
        assert {"nosuid", "nodev"} <= set(pv["spec"]["mountOptions"])
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


def test_launcher_role_is_pods_and_token_records_only() -> None:
    roles = [d for d in _docs("rbac.yaml") if d["kind"] in ("Role", "ClusterRole")]
    assert [r["kind"] for r in roles] == ["Role", "ClusterRole"]
    # Cluster-wide, only reading a node by name (does it report Strict support?).
    assert roles[1]["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    assert roles[0]["metadata"]["namespace"] == "wsc-jobs"
    assert roles[0]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["create", "get", "list", "delete", "patch"],
        },
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["create", "get", "list", "delete", "patch"],
        },
    ]


def test_keyring_is_mounted_read_only_0400_by_the_server_only() -> None:
    deployment = next(d for d in _docs("server.yaml") if d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "keyring")
    assert volume["secret"]["defaultMode"] == 0o400
    assert all(item["mode"] == 0o400 for item in volume["secret"]["items"])
    users = {
        c["name"]: m
        for c in spec["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] == "keyring"
    }
    assert list(users) == ["server"]
    assert users["server"]["readOnly"] is True
    assert users["server"]["subPath"] == "keyring"  # the file itself, not the ..data symlink
    opa = next(c for c in spec["containers"] if c["name"] == "opa")
    assert "--addr=127.0.0.1:8181" in opa["args"]
    assert spec["automountServiceAccountToken"] is False


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_opa_sidecar_runs_with_the_devstack_go_runtime_settings() -> None:
    (deployment,) = [d for d in _docs("server.yaml") if d["kind"] == "Deployment"]
    (opa,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "opa"]
    env = {e["name"]: e["value"] for e in opa["env"]}
    assert env == OPA_ENV
    assert "--optimize-store-for-read-speed" in opa["args"]  # devstack passes it too
    # The soft limit must leave room below the container's hard limit.
    limit = _mebibytes(opa["resources"]["limits"]["memory"])
    assert _mebibytes(env["GOMEMLIMIT"].replace("B", "")) <= 0.8 * limit
