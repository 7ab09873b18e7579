"""Submitters: where built pods go. Kubernetes (:mod:`.kube`) or a spool directory (:mod:`.spool`).

This module is the facade: the interface and record reading live in
:mod:`tokensvc.cluster.jobstore`, each store in its own module.
"""

from __future__ import annotations

from tokensvc.cluster.jobstore import JobExists, Submitter, record_from_manifest
from tokensvc.cluster.kube import KubernetesSubmitter
from tokensvc.cluster.spool import SpoolSubmitter, to_yaml
from tokensvc.core.errors import SubmitFailed

__all__ = [
    "JobExists",
    "KubernetesSubmitter",
    "SpoolSubmitter",
    "SubmitFailed",
    "Submitter",
    "record_from_manifest",
    "to_yaml",
]
