"""The Kubernetes submitter: pods through the official client, each call within a deadline.

Deadlines, not hidden retries. Every API call carries ``timeout`` (seconds,
bounding connecting and each wait for the server) and is sent at most once:
the client's urllib3 retries are turned off, because a retried create or
delete would cost another full timeout each and a retried create may land
twice. An action makes at most two calls, so it answers within ``2 *
timeout`` whatever the API server does (refuses, stalls, hangs up):

=============  ==================================  =============
action         calls                                deadline
=============  ==================================  =============
create         create; after an ambiguous failure,  2 x timeout
               a clean-up delete
get, list      one read                             1 x timeout
delete         read (ours?), delete                 2 x timeout
set_priority   read (ours?), patch                  2 x timeout
logs           one streamed read                    timeout to connect
                                                    and per read; when
                                                    followed, to connect
                                                    (a read: at most
                                                    FOLLOW_IDLE_TIMEOUT)
=============  ==================================  =============

The reconciler's checks are not actions: ``held`` is one list call, and
``identity_violations`` one list call plus one read per node running a job
of ours, so ``(1 + nodes) x timeout``.

A failed create says what may exist (``SubmitFailed.created``): False when
nothing can have been created -- the connection was never made, or the API
server answered 4xx -- and None only when the outcome is unknown (the request
was sent and no answer came, or a 5xx) and the clean-up delete could not
confirm that no pod is left.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from typing import Any, Final

import urllib3
import yaml

from tokensvc.cluster.consumed import KubernetesRecords
from tokensvc.cluster.joblogs import FOLLOW_IDLE_TIMEOUT, HTTPLogStream, LogStream
from tokensvc.cluster.jobs import JobRecord, is_job_name
from tokensvc.cluster.jobstore import (
    IdentityMismatch,
    IdentityViolation,
    JobExists,
    StrictUnsupported,
    record_from_manifest,
)
from tokensvc.cluster.launcher import (
    ANNOTATION_PRIORITY,
    CONTAINER_NAME,
    DEFAULT_NAMESPACE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from tokensvc.core.errors import NotFound, NotStarted, SubmitFailed

DEFAULT_TIMEOUT: Final = 5.0  # seconds per API call
# The scheduling gate every job pod is created with; the scheduler ignores the
# pod until it is removed (release), which happens only once the submit's
# consumed-token record says the job was admitted.
ADMISSION_GATE: Final = "tokensvc.io/admitted"


def _has_started(status: Any) -> bool:
    """Whether a container status says its process was started (running, or since ended)."""
    state = status.state
    return state is not None and (state.running is not None or state.terminated is not None)


class KubernetesSubmitter:
    """Pods through the official client (kubeconfig, or in-cluster service account)."""

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        # Imported here: the spool-only server never pays for the API machinery.
        from kubernetes import client as k8s  # noqa: PLC0415
        from kubernetes import config as k8s_config  # noqa: PLC0415

        self._k8s = k8s
        cfg = k8s.Configuration()
        try:
            if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig,
                    context=context,
                    client_configuration=cfg,
                    persist_config=False,
                )
        except (k8s_config.ConfigException, OSError, ValueError, yaml.YAMLError) as err:
            raise SubmitFailed("cannot load Kubernetes client configuration") from err
        # urllib3's default would retry every call up to 3 times; False: no
        # retry of any kind, each error raised as it happens (not wrapped).
        cfg.retries = False
        cfg.client_go_retries = False  # nor Retry-After loops on reads
        self.namespace = namespace
        self.timeout = timeout
        self._api_client = k8s.ApiClient(cfg)
        self._api = k8s.CoreV1Api(self._api_client)
        self.records = KubernetesRecords(self._api, k8s, namespace=namespace, timeout=timeout)

    def _call(self, what: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call, sent once, within ``timeout``; errors as NotFound/JobExists/SubmitFailed.

        ``SubmitFailed.created`` is False when the request cannot have reached
        the API server or was refused with a 4xx, None when it may have been
        acted on.
        """
        try:
            kwargs.setdefault("_request_timeout", self.timeout)
            return fn(*args, **kwargs)
        except self._k8s.ApiException as err:
            status: int | None = err.status or None  # 0: TLS failure inside the client
            if status == 404:
                raise NotFound(f"no job {name}") from err
            if status == 409 and what == "create":
                raise JobExists(name) from err
            refused = status is not None and 400 <= status < 500 and status != 408
            raise SubmitFailed(
                f"Kubernetes API {what} failed ({status or 'no response'})",
                status=status,
                created=False if refused else None,
            ) from err
        except urllib3.exceptions.ConnectTimeoutError as err:
            # Includes NewConnectionError (refused, unreachable, name not
            # resolved): no connection, so nothing was sent.
            raise SubmitFailed(
                f"Kubernetes API {what} failed (cannot connect)", created=False
            ) from err
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:
            # Read timeout, hang-up, an undecodable answer (ValueError from
            # the client's models): the request was sent, the outcome unknown.
            raise SubmitFailed(f"Kubernetes API {what} failed (no response)", created=None) from err

    def _to_record(self, pod: Any, name: str) -> JobRecord:
        manifest = self._api_client.sanitize_for_serialization(pod)  # type: ignore[no-untyped-call]
        try:
            return record_from_manifest(manifest)
        except ValueError as err:
            raise NotFound(f"no job {name}") from err

    def create(self, manifest: dict[str, Any]) -> JobRecord:
        """Create the pod with the admission scheduling gate: it cannot start until released."""
        record = record_from_manifest(manifest)
        spec = manifest.get("spec") or {}
        held = {**manifest, "spec": {**spec, "schedulingGates": [{"name": ADMISSION_GATE}]}}
        try:
            self._call("create", record.name, self._api.create_namespaced_pod, self.namespace, held)
        except SubmitFailed as err:
            # The outcome is unknown: remove whatever may exist, so that the
            # client's error is the truth whenever the API server lets us.
            if err.created is None and not self._none_left(record.name):
                raise SubmitFailed(
                    f"Kubernetes API create failed and job {record.name} may exist",
                    status=err.status,
                    created=None,
                ) from err
            raise SubmitFailed(str(err), status=err.status, created=False) from err
        return record

    def release(self, name: str) -> None:
        """Remove the admission gate (a JSON patch; removing an absent gate is a no-op)."""
        pod = self._call("get", name, self._api.read_namespaced_pod, name, self.namespace)
        gates = [g.name for g in (pod.spec.scheduling_gates or [])]
        if ADMISSION_GATE not in gates:
            return
        kept = [{"name": g} for g in gates if g != ADMISSION_GATE]
        patch = [{"op": "replace", "path": "/spec/schedulingGates", "value": kept}]
        self._call("release", name, self._api.patch_namespaced_pod, name, self.namespace, patch)

    def _our_pods(self) -> list[Any]:
        """Every pod this service created in the namespace (one list call)."""
        pods = self._call(
            "list",
            "",
            self._api.list_namespaced_pod,
            self.namespace,
            label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}",
        )
        return list(pods.items)

    def held(self, older_than: float) -> list[str]:
        names = []
        for pod in self._our_pods():
            gates = [g.name for g in (pod.spec.scheduling_gates or [])]
            created = pod.metadata.creation_timestamp
            if ADMISSION_GATE in gates and created is not None and created.timestamp() < older_than:
                names.append(pod.metadata.name)
        return sorted(names)

    def identity_violations(self) -> list[IdentityViolation]:
        """Judge every started job of ours by what its node reports; at most one finding per job.

        A job is judged once one of its containers has started (running or
        terminated); a container still waiting has run nothing, and a job
        already being deleted is not judged again. Then, in this order:

        - a container's ``status.containerStatuses[].user.linux`` (the
          identity the runtime gave its first process) must equal the pod's
          ``runAsUser``, ``runAsGroup`` and groups -- else an
          :class:`IdentityMismatch`;
        - its node must report ``status.features.supplementalGroupsPolicy:
          true`` (kubelet and runtime honour Strict) -- else
          :class:`StrictUnsupported`;
        - every running container must report ``user.linux`` at all -- else
          :class:`StrictUnsupported`. A terminated one that reports nothing
          no longer runs anything to stop, and is not judged.

        One list call, then one read per node that has a started job of
        ours (cached for this call). A failed read raises
        :class:`SubmitFailed` and judges nothing: an unreachable API server
        is no evidence against a job, and the next pass judges again.
        """
        nodes: dict[str, str | None] = {}
        found: list[IdentityViolation] = []
        for pod in self._our_pods():
            finding = self._judge(pod, nodes)
            if finding is not None:
                found.append(finding)
        return found

    def _judge(self, pod: Any, nodes: dict[str, str | None]) -> IdentityViolation | None:
        """One pod's finding (see :meth:`identity_violations`); ``nodes`` caches node verdicts."""
        name = pod.metadata.name
        statuses = (pod.status.container_statuses or []) if pod.status else []
        started = [s for s in statuses if _has_started(s)]
        if not started or pod.metadata.deletion_timestamp is not None:
            return None
        ctx = pod.spec.security_context
        if ctx is not None:
            # The kernel's group list holds the primary gid too: compare with it.
            asked = tuple(sorted({ctx.run_as_group, *(ctx.supplemental_groups or [])}))
            expected = (ctx.run_as_user, ctx.run_as_group, asked)
            for status in started:
                linux = status.user.linux if status.user is not None else None
                if linux is None:
                    continue
                groups = tuple(sorted({linux.gid, *(linux.supplemental_groups or [])}))
                reported = (linux.uid, linux.gid, groups)
                if reported != expected:
                    return IdentityMismatch(name, expected, reported)
        node = pod.spec.node_name or ""
        if node not in nodes:
            nodes[node] = self._cannot_vouch(node)
        why = nodes[node]
        if why is not None:
            return StrictUnsupported(name, node, why)
        for status in started:
            if status.state.running is not None and (
                status.user is None or status.user.linux is None
            ):
                return StrictUnsupported(
                    name, node, f"running container {status.name} reports no user.linux"
                )
        return None

    def _cannot_vouch(self, node: str) -> str | None:
        """Why ``node`` cannot vouch for Strict; None when it reports the feature true."""
        if not node:
            return "the pod names no node"
        try:
            found = self._call("get node", node, self._api.read_node, node)
        except NotFound:
            return "the node no longer exists"
        features = found.status.features if found.status is not None else None
        if features is None or features.supplemental_groups_policy is not True:
            return "the node does not report status.features.supplementalGroupsPolicy: true"
        return None

    def _none_left(self, name: str) -> bool:
        """After an ambiguous create: delete any pod of that name. True once none is left."""
        try:
            self._call("delete", name, self._api.delete_namespaced_pod, name, self.namespace)
        except NotFound:
            return True
        except SubmitFailed:
            return False
        return True

    def get(self, name: str) -> JobRecord:
        if not is_job_name(name):
            raise NotFound(f"no job {name!r}")
        pod = self._call("get", name, self._api.read_namespaced_pod, name, self.namespace)
        return self._to_record(pod, name)

    def logs(self, job: JobRecord, *, follow: bool, limit_bytes: int) -> LogStream:
        """The job container's output through the API server (which asks the node's kubelet).

        Not followed: ``timeout`` bounds connecting and each read. Followed:
        ``timeout`` bounds connecting; a read waits up to ``FOLLOW_IDLE_TIMEOUT``
        for the job's next output (longer, and the stream breaks off), and the
        stream ends when its container ends, after ``limit_bytes``, or when the
        server shuts it down (:class:`HTTPLogStream`).
        """
        if not job.has_run:
            raise NotStarted(f"job {job.name} has not started yet ({job.reason or job.phase})")
        try:
            response = self._call(
                "logs",
                job.name,
                self._api.read_namespaced_pod_log,
                job.name,
                self.namespace,
                container=CONTAINER_NAME,
                follow=follow,
                limit_bytes=limit_bytes,
                _preload_content=False,
                _request_timeout=(self.timeout, FOLLOW_IDLE_TIMEOUT) if follow else self.timeout,
            )
        except SubmitFailed as err:
            # The API server answers 400 for a container that has no output
            # yet (waiting to start, or its pod has no node).
            if err.status == 400:
                raise NotStarted(f"job {job.name} has not started yet") from err
            raise
        return HTTPLogStream(response, limit_bytes=limit_bytes)

    def list(
        self, *, owner_uid: int | None = None, projects: Collection[str] | None = None
    ) -> list[JobRecord]:
        records = []
        for pod in self._our_pods():
            with contextlib.suppress(NotFound):
                records.append(self._to_record(pod, ""))
        if owner_uid is None and projects is None:
            return records
        visible = set(projects or ())
        return [r for r in records if r.owner_uid == owner_uid or r.project in visible]

    def delete(self, name: str) -> None:
        self.get(name)  # only ever delete pods that are ours
        self._call("delete", name, self._api.delete_namespaced_pod, name, self.namespace)

    def set_priority(self, name: str, priority: int) -> JobRecord:
        self.get(name)
        patch = {"metadata": {"annotations": {ANNOTATION_PRIORITY: str(priority)}}}
        pod = self._call("patch", name, self._api.patch_namespaced_pod, name, self.namespace, patch)
        return self._to_record(pod, name)

    def close(self) -> None:
        self._api_client.close()  # type: ignore[no-untyped-call]


__all__ = ["ADMISSION_GATE", "DEFAULT_TIMEOUT", "KubernetesSubmitter"]
