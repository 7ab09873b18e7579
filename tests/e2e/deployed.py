"""tokensvc deployed on the real node the way an operator deploys it, and a user node beside it.

deploy/k8s goes through two overlays and the pinned kustomize, and every
object it builds is server-side applied (what `kubectl apply --server-side
-k` does):

- tests/e2e/overlay (committed): the images `make images` built, never
  pulled; the NFS PersistentVolumes as local volumes on this node.
- a per-run overlay (here): what exists only now. The bundle service's
  address; the key ring Secret and the bundle-signing key ConfigMap an admin
  creates, as kustomize generators; a directory for each export; and the
  API server's address for the launcher. The node runs no kube-proxy, so the
  `kubernetes` Service's cluster IP leads nowhere and the server container
  is told the API server's real address instead (the environment variables
  in-cluster clients read).

The bundle service is this host, serving the signed bundle of policies/ on
the node's bridge address. The user node is this host too: `tokensvc mintd`
as root with the same key ring, and users calling `tokensvc` through
setpriv with real uids. They reach the server at the addresses the Service's
EndpointSlice lists, as a Service would route them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from integration.k8s.kube import apply, resource_path
from integration.usernode import Daemon, Tree, make_tree, remove_tree, start_daemon
from kubernetes.client.exceptions import ApiException
from realnode import BIN_DIR, REPO, Cluster
from support.opa import builder, opa_binary

from tokensvc.cluster.consumed import LABEL_RECORD, RECORD_KIND
from tokensvc.cluster.devstack import BundleServer
from tokensvc.cluster.launcher import LABEL_MANAGED_BY, MANAGED_BY

OVERLAY = REPO / "tests" / "e2e" / "overlay"
SYSTEM_NAMESPACE = "tokensvc"
DEPLOYMENT = "tokensvc-server"
SERVER_PORT = 8080  # deploy/k8s/tokensvc.conf
REALM = "wsc"  # deploy/k8s/tokensvc.conf: the user node must use the same
READY_TIMEOUT = 240.0  # two replicas' first start on a busy 2-core machine
GONE_TIMEOUT = 120.0


@dataclass
class Deployed:
    """The server running in the cluster, and the user node's pieces; see :func:`deployed`."""

    cluster: Cluster
    workdir: Path
    exports: dict[str, Path]  # export name (PV label) -> its local volume's directory
    server_urls: list[str]  # one per ready replica, from the Service's EndpointSlice
    tree: Tree  # the user node: key ring, tokensvc.conf, mint socket
    mintd: Daemon
    manifests: list[dict[str, Any]]  # what was applied, in order

    def server_pods(self) -> list[Any]:
        return (
            self.cluster.core()
            .list_namespaced_pod(
                SYSTEM_NAMESPACE, label_selector=f"app.kubernetes.io/name={DEPLOYMENT}"
            )
            .items
        )


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(BIN_DIR / "kustomize"), "build", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _per_run_overlay(
    directory: Path, c: Cluster, bundle_url: str, keyring: Path, public_key: Path
) -> dict[str, Path]:
    """Write the per-run overlay into ``directory``; the export directories it names."""
    directory.mkdir(mode=0o700)
    shutil.copyfile(keyring, directory / "keyring")
    (directory / "keyring").chmod(0o600)
    shutil.copyfile(public_key, directory / "bundle.pub")
    api = urlsplit(c.api.url)
    patches: list[dict[str, Any]] = [
        {
            "target": {"kind": "Deployment", "name": DEPLOYMENT},
            "patch": json.dumps(
                [
                    {
                        "op": "add",
                        "path": "/spec/template/spec/containers/0/env/-",
                        "value": {"name": "KUBERNETES_SERVICE_HOST", "value": api.hostname},
                    },
                    {
                        "op": "add",
                        "path": "/spec/template/spec/containers/0/env/-",
                        "value": {"name": "KUBERNETES_SERVICE_PORT", "value": str(api.port)},
                    },
                ]
            ),
        }
    ]
    exports = {}
    for doc in _kustomize(OVERLAY):
        if doc["kind"] != "PersistentVolume":
            continue
        name = doc["metadata"]["labels"]["tokensvc.io/export"]
        exports[name] = directory.parent / "exports" / name
        exports[name].mkdir(parents=True)
        exports[name].chmod(0o755)
        patches.append(
            {
                "target": {"kind": "PersistentVolume", "name": doc["metadata"]["name"]},
                "patch": json.dumps(
                    [{"op": "add", "path": "/spec/local", "value": {"path": str(exports[name])}}]
                ),
            }
        )
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes no absolute path here, but any relative one.
        "resources": [os.path.relpath(OVERLAY, directory)],
        "configMapGenerator": [
            {
                "name": "tokensvc-opa-env",
                "namespace": SYSTEM_NAMESPACE,
                "behavior": "merge",
                "literals": [f"WSC_BUNDLE_URL={bundle_url}"],
            },
            {
                "name": "tokensvc-bundle-key",
                "namespace": SYSTEM_NAMESPACE,
                "files": ["bundle.pub"],
            },
        ],
        "secretGenerator": [
            {"name": "tokensvc-keyring", "namespace": SYSTEM_NAMESPACE, "files": ["keyring"]}
        ],
        "patches": patches,
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return exports


def _deployment_ready(c: Cluster) -> bool:
    with c.api.session("admin") as s:
        resp = s.get(
            f"{c.api.url}/apis/apps/v1/namespaces/{SYSTEM_NAMESPACE}/deployments/{DEPLOYMENT}",
            timeout=10,
        )
    resp.raise_for_status()
    status = resp.json().get("status", {})
    return bool(status.get("readyReplicas") == 2 and status.get("updatedReplicas") == 2)


def _describe_server_pods(c: Cluster) -> str:
    """Each server pod's status and its containers' last log lines (for a failed start)."""
    core = c.core()
    out = []
    for pod in core.list_namespaced_pod(SYSTEM_NAMESPACE).items:
        out.append(f"--- pod {pod.metadata.name}: {pod.status.phase}")
        for cs in pod.status.container_statuses or []:
            out.append(f"  {cs.name}: ready={cs.ready} state={cs.state}")
            with contextlib.suppress(ApiException):
                log = core.read_namespaced_pod_log(
                    pod.metadata.name, SYSTEM_NAMESPACE, container=cs.name, tail_lines=15
                )
                out.append("  " + log.replace("\n", "\n  "))
    return "\n".join(out)


def _server_urls(c: Cluster) -> list[str]:
    with c.api.session("admin") as s:
        resp = s.get(
            f"{c.api.url}/apis/discovery.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/endpointslices",
            params={"labelSelector": f"kubernetes.io/service-name={DEPLOYMENT}"},
            timeout=10,
        )
    resp.raise_for_status()
    urls = []
    for item in resp.json()["items"]:
        for endpoint in item.get("endpoints") or []:
            if endpoint.get("conditions", {}).get("ready"):
                urls += [f"http://{ip}:{SERVER_PORT}" for ip in endpoint["addresses"]]
    return sorted(urls)


def _wait(what: str, check: Any, timeout: float, explain: Any = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)  # polling status: the tests have no watch to wait on
    raise AssertionError(f"{what} not within {timeout}s\n{explain()}")


def _delete(c: Cluster, doc: dict[str, Any]) -> None:
    with c.api.session("admin") as s:
        s.delete(c.api.url + resource_path(c.api, doc), timeout=30)


def _gone(c: Cluster, doc: dict[str, Any]) -> bool:
    with c.api.session("admin") as s:
        return s.get(c.api.url + resource_path(c.api, doc), timeout=10).status_code == 404


def _remove_jobs(c: Cluster) -> None:
    """Every job pod and consumed-token record the deployed server made."""
    core = c.core()
    ns = c.api.jobs_namespace
    core.delete_collection_namespaced_pod(
        ns, label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}", grace_period_seconds=0
    )
    core.delete_collection_namespaced_config_map(ns, label_selector=f"{LABEL_RECORD}={RECORD_KIND}")
    _wait(
        "job pods gone",
        lambda: (
            not core.list_namespaced_pod(
                ns, label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}"
            ).items
        ),
        GONE_TIMEOUT,
    )


def _undeploy(c: Cluster, manifests: list[dict[str, Any]]) -> None:
    """Delete what was applied, newest first, and wait until it is gone.

    The jobs namespace and its default ServiceAccount belong to the cluster
    fixture (other tests use them): they stay.
    """
    _remove_jobs(c)
    kept = {("Namespace", c.api.jobs_namespace), ("ServiceAccount", "default")}
    doomed = [d for d in reversed(manifests) if (d["kind"], d["metadata"]["name"]) not in kept]
    for doc in doomed:
        _delete(c, doc)
    for doc in doomed:
        _wait(f"{doc['kind']}/{doc['metadata']['name']} deleted", lambda d=doc: _gone(c, d), 120)


@contextlib.contextmanager
def deployed(cluster: Cluster) -> Iterator[Deployed]:
    """tokensvc running in ``cluster`` with two Ready replicas; all of it removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="deployed-", dir=cluster.root))
    signing_key = builder.generate_signing_key(workdir / "bundle-signing-key.pem")
    bundle = workdir / "wsc.tar.gz"
    builder.build_bundle(
        bundle,
        signing_key=signing_key,
        data_dir=builder.DEFAULT_DATA_DIR,
        revision="e2e",
        opa=opa_binary(),
    )
    bundles = BundleServer(host=cluster.bridge_ip)
    bundles.publish(bundle.read_bytes())
    tree = make_tree()
    manifests: list[dict[str, Any]] = []
    mintd = None
    try:
        exports = _per_run_overlay(
            workdir / "overlay",
            cluster,
            bundles.url,
            tree.keyring,
            builder.public_key_path(signing_key),
        )
        for doc in _kustomize(workdir / "overlay"):
            apply(cluster.api, doc)
            manifests.append(doc)
        _wait(
            "tokensvc-server with 2 ready replicas",
            lambda: _deployment_ready(cluster),
            READY_TIMEOUT,
            lambda: _describe_server_pods(cluster),
        )
        _wait("2 ready endpoints", lambda: len(_server_urls(cluster)) == 2, 60)
        tree.config.write_text(
            f'realm = "{REALM}"\nsocket = "{tree.socket}"\n'
            f'server_url = "{_server_urls(cluster)[0]}"\n'
        )
        mintd = start_daemon(tree)
        yield Deployed(
            cluster=cluster,
            workdir=workdir,
            exports=exports,
            server_urls=_server_urls(cluster),
            tree=tree,
            mintd=mintd,
            manifests=manifests,
        )
    finally:
        try:
            if mintd is not None:
                mintd.stop()
            _undeploy(cluster, manifests)
        finally:
            bundles.stop()
            remove_tree(tree)
            shutil.rmtree(workdir, ignore_errors=True)


__all__ = ["REALM", "SYSTEM_NAMESPACE", "Deployed", "deployed"]
