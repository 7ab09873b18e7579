"""After launch, on a real API server: jobs whose node cannot vouch for Strict are deleted.

No kubelet runs here, so the tests do what a kubelet would: register a Node
with the ``status.features`` it reports, bind the released job to it, and
write the pod's ``status.containerStatuses`` (state and ``user.linux``). The
reconciler's check then runs as the launcher's RBAC identity from
deploy/k8s, against exactly what the API server stored.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kube import JOBS_NAMESPACE, KubeAPI, bind_pod, report_job_container
from kubernetes.client.exceptions import ApiException
from support.reconciler import reconciling_service

from tokensvc.cluster.jobs import JobRequest
from tokensvc.cluster.launcher import CONTAINER_NAME, build_pod, pod_manifest
from tokensvc.cluster.opa import Decision, RunAs
from tokensvc.cluster.service import AdmissionService
from tokensvc.cluster.submitters import KubernetesSubmitter
from tokensvc.core.claims import new_claims

pytestmark = pytest.mark.usefixtures("deployed_rbac")

UID, GID, GROUPS = 1002, 2001, (2001, 2004)
# What a node that honours Strict reports for this job: exactly the decision.
EXACT: dict[str, Any] = {"uid": UID, "gid": GID, "supplementalGroups": sorted({GID, *GROUPS})}
RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
WAITING = {"waiting": {"reason": "ContainerCreating"}}


def _manifest() -> dict[str, Any]:
    decision = Decision(allow=True, run_as=RunAs(UID, GID), supplemental_groups=GROUPS)
    request = JobRequest(project="ml-team", image="registry.invalid/train:1", command=("true",))
    claims = new_claims(
        uid=UID, gid=GID, groups=GROUPS, user="ada", host="test", realm="test", now=time.time()
    )
    return pod_manifest(build_pod(claims, decision, request, decision_id="d-verify"))


@dataclass
class Verifier:
    """The launcher's submitter, a service to run the check, and what it wrote."""

    api: KubeAPI
    submitter: KubernetesSubmitter
    service: AdmissionService
    lines: list[dict[str, Any]]
    nodes: list[str]
    jobs: list[str]

    def node(self, strict: bool | None) -> str:
        """Register a node as its kubelet would, reporting ``supplementalGroupsPolicy: strict``.

        None: a node that reports no such feature at all (an older kubelet or runtime).
        """
        name = f"verify-{secrets.token_hex(4)}"
        core = self.api.core()
        core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        self.nodes.append(name)
        if strict is not None:
            status = {"status": {"features": {"supplementalGroupsPolicy": strict}}}
            core.patch_node_status(name, status)
        return name

    def start(self, node: str, state: dict[str, Any], user: dict[str, Any] | None) -> str:
        """Create and release a job, bind it to ``node``, report its container as a kubelet."""
        name = self.submitter.create(_manifest()).name
        self.jobs.append(name)
        self.submitter.release(name)
        bind_pod(self.api, name, node)
        self.report(name, state, user)
        return name

    def report(self, name: str, state: dict[str, Any], user: dict[str, Any] | None) -> None:
        """Write the pod's container status as the kubelet would."""
        phase = "Running" if "running" in state else "Pending"
        report_job_container(
            self.api, name, phase=phase, state=state, image="registry.invalid/train:1", user=user
        )

    def verify(self) -> None:
        asyncio.run(self.service.verify_identities())

    def deleted(self, name: str) -> bool:
        """Gone, or deleted and waiting for a kubelet that will never confirm it."""
        try:
            pod = self.api.core().read_namespaced_pod(name, JOBS_NAMESPACE)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return pod.metadata.deletion_timestamp is not None

    def audited(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("job") == name]

    def counted(self, metric: str) -> float | None:
        return self.service.metrics.registry.get_sample_value(f"{metric}_total")


@pytest.fixture
def verifier(kube_api: KubeAPI) -> Iterator[Verifier]:
    submitter = KubernetesSubmitter(
        namespace=JOBS_NAMESPACE, kubeconfig=str(kube_api.kubeconfig("launcher")), timeout=10
    )
    lines: list[dict[str, Any]] = []
    service = reconciling_service(submitter, namespace=JOBS_NAMESPACE, audit=lines.append)
    v = Verifier(kube_api, submitter, service, lines, [], [])
    try:
        yield v
    finally:
        core = kube_api.core()
        for name in v.jobs:  # bound pods: only a forced deletion removes them without a kubelet
            try:
                core.delete_namespaced_pod(name, JOBS_NAMESPACE, grace_period_seconds=0)
            except ApiException as err:
                if err.status != 404:
                    raise
        for node in v.nodes:
            core.delete_node(node)
        submitter.close()


def _node_reads(api: KubeAPI) -> float:
    """How many GETs of a single Node the API server has answered (its own request metric)."""
    with api.session() as s:
        text = s.get(f"{api.url}/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and all(
            f'{k}="{v}"' in line
            for k, v in {"resource": "nodes", "subresource": "", "verb": "GET"}.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_job_on_a_strict_node_reporting_its_decision_is_left_alone(
    verifier: Verifier,
) -> None:
    node = verifier.node(strict=True)
    jobs = [verifier.start(node, RUNNING, EXACT) for _ in range(2)]
    reads = _node_reads(verifier.api)
    verifier.verify()
    assert not any(verifier.deleted(name) for name in jobs)
    assert all(verifier.audited(name) == [] for name in jobs)
    assert _node_reads(verifier.api) - reads == 1  # once per pass, not once per job
    assert verifier.counted("tokensvc_strict_unsupported_jobs") == 0
    assert verifier.counted("tokensvc_identity_mismatches") == 0


@pytest.mark.parametrize("strict", [None, False], ids=["feature-unreported", "feature-false"])
def test_a_job_on_a_node_without_strict_is_deleted_audited_and_counted(
    verifier: Verifier, strict: bool | None
) -> None:
    node = verifier.node(strict=strict)
    # It even reports the right identity: without Strict nothing keeps it so.
    name = verifier.start(node, RUNNING, EXACT)
    verifier.verify()
    assert verifier.deleted(name)
    assert verifier.audited(name) == [
        {
            "event": "strict_unsupported",
            "job": name,
            "node": node,
            "reason": "the node does not report status.features.supplementalGroupsPolicy: true",
        }
    ]
    assert verifier.counted("tokensvc_strict_unsupported_jobs") == 1
    assert verifier.counted("tokensvc_identity_mismatches") == 0


def test_a_running_container_that_reports_no_identity_is_deleted(verifier: Verifier) -> None:
    node = verifier.node(strict=True)
    name = verifier.start(node, RUNNING, user=None)
    verifier.verify()
    assert verifier.deleted(name)
    (line,) = verifier.audited(name)
    assert line["event"] == "strict_unsupported"
    assert line["node"] == node
    assert f"running container {CONTAINER_NAME} reports no user.linux" == line["reason"]
    assert verifier.counted("tokensvc_strict_unsupported_jobs") == 1


def test_a_waiting_container_is_not_judged_until_it_starts(verifier: Verifier) -> None:
    node = verifier.node(strict=None)  # a node that would fail the job once it starts
    name = verifier.start(node, WAITING, user=None)
    verifier.verify()
    assert not verifier.deleted(name)
    assert verifier.audited(name) == []
    verifier.report(name, RUNNING, EXACT)
    verifier.verify()
    assert verifier.deleted(name)
    assert [line["event"] for line in verifier.audited(name)] == ["strict_unsupported"]


def test_a_job_reported_with_another_group_is_an_identity_mismatch(verifier: Verifier) -> None:
    node = verifier.node(strict=True)
    merged = {**EXACT, "supplementalGroups": [*EXACT["supplementalGroups"], 4242]}
    name = verifier.start(node, RUNNING, merged)
    verifier.verify()
    assert verifier.deleted(name)
    (line,) = verifier.audited(name)
    assert line["event"] == "identity_mismatch"
    assert line["expected"] == {"uid": UID, "gid": GID, "groups": sorted({GID, *GROUPS})}
    assert 4242 in line["reported"]["groups"]
    assert verifier.counted("tokensvc_identity_mismatches") == 1
    assert verifier.counted("tokensvc_strict_unsupported_jobs") == 0


def test_a_job_already_being_deleted_is_judged_once(verifier: Verifier) -> None:
    node = verifier.node(strict=False)
    name = verifier.start(node, RUNNING, EXACT)
    verifier.verify()
    verifier.verify()  # the pod lingers until its kubelet confirms; not deleted twice
    assert verifier.deleted(name)
    assert len(verifier.audited(name)) == 1
    assert verifier.counted("tokensvc_strict_unsupported_jobs") == 1
