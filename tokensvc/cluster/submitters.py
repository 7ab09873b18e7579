"""Submitters: where built pods go. Kubernetes (:mod:`.kube`) or a spool directory (:mod:`.spool`).

This module is the facade: the interface and record reading live in
:mod:`tokensvc.cluster.jobstore`, each store in its own module.
"""

from __future__ import annotations

from tokensvc.cluster.jobstore import JobExists, Submitter, record_from_manifest
from tokensvc.cluster.kube import KubernetesSubmitter
from tokensvc.cluster.spool import SpoolSubmitter, to_yaml
from tokensvc.core.config import ServerSettings
from tokensvc.core.errors import SubmitFailed


def submitter_from_settings(server: ServerSettings) -> Submitter:
    """The job store the ``[server]`` settings name: Kubernetes or the spool directory."""
    if server.submitter == "kubernetes":
        return KubernetesSubmitter(
            namespace=server.namespace,
            kubeconfig=server.kubeconfig or None,
            context=server.kube_context or None,
            timeout=server.kube_timeout,
        )
    return SpoolSubmitter(server.spool_dir, fsync=server.spool_fsync)


__all__ = [
    "JobExists",
    "KubernetesSubmitter",
    "SpoolSubmitter",
    "SubmitFailed",
    "Submitter",
    "record_from_manifest",
    "submitter_from_settings",
    "to_yaml",
]
