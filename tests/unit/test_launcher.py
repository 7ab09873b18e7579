"""build_pod: the exact pod for a decision, schema-valid and Pod Security "restricted"."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import pytest
import yaml
from kubernetes.client import ApiClient, V1Pod
from support.toolpaths import tool

from tokensvc.cluster.jobs import JobRequest, MountRequest, parse_job_request
from tokensvc.cluster.launcher import LaunchRefused, build_manifest, build_pod, pod_manifest
from tokensvc.cluster.opa import Decision, GrantedMount, RunAs, parse_decision

ROOT = Path(__file__).resolve().parents[2]
TOKEN_ID = "0123456789abcdef0123456789abcdef"


def k8s_schema_version() -> str:
    """TOKENSVC_K8S_SCHEMA_VERSION (make exports it), else the Makefile's one pin."""
    version = os.environ.get("TOKENSVC_K8S_SCHEMA_VERSION")
    if version:
        return version
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^K8S_SCHEMA_VERSION\s*:=\s*(\S+)", text, re.MULTILINE)
    assert match, "Makefile pins K8S_SCHEMA_VERSION"
    return match.group(1)


@dataclasses.dataclass(frozen=True)
class Ident:
    uid: int
    token_id: str = TOKEN_ID
    gid: int = 2001
    groups: tuple[int, ...] = (2001, 3001, 4001)


REQUEST = parse_job_request(
    {
        "project": "ml-team",
        "image": "registry.example/ml/train:1.2",
        "command": ["python", "train.py", "--epochs", "3"],
        "mounts": [
            {"path": "/nfs/projects/ml/data", "mode": "ro"},
            {"path": "/nfs/projects/ml/scratch", "mode": "rw"},
            {"path": "/nfs/home/alice", "mode": "rw"},
        ],
        "resources": {"systems": 2},
        "priority": 3,
    }
)
DECISION = parse_decision(
    {
        "allow": True,
        "reasons": [],
        "run_as": {"uid": 1001, "gid": 2001},
        "supplemental_groups": [3001, 2001],
        "privileges": {"ml-team": "member"},
        "mounts": [
            {
                "path": "/nfs/projects/ml/data",
                "export": "projects",
                "pvc": "nfs-projects",
                "sub_path": "ml/data",
                "read_only": True,
            },
            {
                "path": "/nfs/projects/ml/scratch",
                "export": "projects",
                "pvc": "nfs-projects",
                "sub_path": "ml/scratch",
                "read_only": False,
            },
            {
                "path": "/nfs/home/alice",
                "export": "home",
                "pvc": "nfs-home",
                "sub_path": "alice",
                "read_only": False,
            },
        ],
        "priority": 3,
    }
)

EXPECTED: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": f"wsc-job-{TOKEN_ID}",
        "namespace": "wsc-jobs",
        "labels": {
            "app.kubernetes.io/managed-by": "tokensvc",
            "tokensvc.io/owner-uid": "1001",
            "tokensvc.io/project": "ml-team",
            "tokensvc.io/token-id": TOKEN_ID,
        },
        "annotations": {
            "tokensvc.io/priority": "3",
            "tokensvc.io/decision-id": "d-1",
        },
    },
    "spec": {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsUser": 1001,
            "runAsGroup": 2001,
            "runAsNonRoot": True,
            "supplementalGroups": [2001, 3001],
            "supplementalGroupsPolicy": "Strict",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "job",
                "image": "registry.example/ml/train:1.2",
                "command": ["python", "train.py", "--epochs", "3"],
                "resources": {
                    "limits": {"tokensvc.io/systems": "2"},
                    "requests": {"tokensvc.io/systems": "2"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [
                    {
                        "name": "nfs-0",
                        "mountPath": "/nfs/projects/ml/data",
                        "subPath": "ml/data",
                        "readOnly": True,
                    },
                    {
                        "name": "nfs-0",
                        "mountPath": "/nfs/projects/ml/scratch",
                        "subPath": "ml/scratch",
                        "readOnly": False,
                    },
                    {
                        "name": "nfs-1",
                        "mountPath": "/nfs/home/alice",
                        "subPath": "alice",
                        "readOnly": False,
                    },
                ],
            }
        ],
        "volumes": [
            {
                "name": "nfs-0",
                "persistentVolumeClaim": {"claimName": "nfs-projects", "readOnly": False},
            },
            {
                "name": "nfs-1",
                "persistentVolumeClaim": {"claimName": "nfs-home", "readOnly": False},
            },
        ],
    },
}


def manifest(
    decision: Decision = DECISION, request: JobRequest = REQUEST, uid: int = 1001
) -> dict[str, Any]:
    pod = build_pod(Ident(uid), decision, request, decision_id="d-1")
    sanitized: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    assert pod_manifest(pod) == sanitized  # the fast path serialises identically
    same_as_model(build_manifest(Ident(uid), decision, request, decision_id="d-1"), pod)
    return sanitized


def same_as_model(fast: dict[str, Any], pod: V1Pod) -> None:
    """The server's dict is the model's manifest key for key, in the same order (same YAML)."""
    assert json.dumps(fast) == json.dumps(pod_manifest(pod))


def test_pod_is_exactly_the_expected_manifest() -> None:
    assert manifest() == EXPECTED
    pod = build_pod(Ident(1001), DECISION, REQUEST, decision_id="d-1")
    assert isinstance(pod, V1Pod)


def test_whole_export_mount_has_no_sub_path() -> None:
    whole = dataclasses.replace(DECISION.mounts[2], sub_path="")
    pod = manifest(dataclasses.replace(DECISION, mounts=(*DECISION.mounts[:2], whole)))
    assert "subPath" not in pod["spec"]["containers"][0]["volumeMounts"][2]


def test_the_model_refuses_unknown_fields_and_wrong_types() -> None:
    # build_pod reads build_manifest through V1Pod: a typo or a wrong type fails there.
    with pytest.raises(pydantic.ValidationError):
        V1Pod.model_validate({**EXPECTED, "spec": {**EXPECTED["spec"], "restartPolicyy": "No"}})
    with pytest.raises(pydantic.ValidationError):
        V1Pod.model_validate({**EXPECTED, "kind": 1})


def test_pod_is_pure() -> None:
    assert manifest() == manifest()


def test_minimal_pod_has_no_volumes_and_default_priority() -> None:
    request = JobRequest(project="ml-team", image="busybox", command=("true",))
    decision = Decision(allow=True, run_as=RunAs(1001, 2001), supplemental_groups=(2001,))
    model = build_pod(Ident(1001), decision, request, decision_id=None)
    same_as_model(build_manifest(Ident(1001), decision, request, decision_id=None), model)
    pod = pod_manifest(model)
    assert "volumes" not in pod["spec"]
    assert "volumeMounts" not in pod["spec"]["containers"][0]
    assert pod["metadata"]["annotations"] == {"tokensvc.io/priority": "0"}


def test_read_only_pvc_volume_when_every_mount_of_it_is_read_only() -> None:
    decision = dataclasses.replace(DECISION, mounts=DECISION.mounts[:1])
    request = dataclasses.replace(REQUEST, mounts=REQUEST.mounts[:1])
    volumes = manifest(decision, request)["spec"]["volumes"]
    assert volumes == [
        {"name": "nfs-0", "persistentVolumeClaim": {"claimName": "nfs-projects", "readOnly": True}}
    ]


def test_mount_paths_pair_by_order_when_the_policy_does_not_echo_them() -> None:
    mounts = tuple(dataclasses.replace(m, path=None) for m in DECISION.mounts)
    pod = manifest(dataclasses.replace(DECISION, mounts=mounts))
    assert pod == EXPECTED


@pytest.mark.parametrize(
    ("change", "uid", "message"),
    [
        ({"allow": False}, 1001, "does not allow"),
        ({"run_as": None}, 1001, "no run_as"),
        ({"run_as": RunAs(1002, 2001)}, 1001, "another user"),
        ({"run_as": RunAs(0, 2001)}, 0, "uid 0"),
        ({"run_as": RunAs(1001, 0)}, 1001, "gid 0"),
        ({"supplemental_groups": (2001, 0)}, 1001, "gid 0"),
        ({"supplemental_groups": tuple(range(2001, 2018))}, 1001, "more than 16"),
        (
            {"mounts": (GrantedMount("p", "nfs-projects", "../etc", True, "/nfs/home/alice"),)},
            1001,
            "relative",
        ),
        (
            {"mounts": (GrantedMount("p", "nfs-projects", "/abs", True, "/nfs/home/alice"),)},
            1001,
            "relative",
        ),
        (
            {
                "mounts": (
                    GrantedMount("p", "nfs-projects", "a", True, "/nfs/home/alice"),
                    GrantedMount("p", "nfs-projects", "b", True, "/nfs/home//alice/"),
                )
            },
            1001,
            "share one path",
        ),
        ({"mounts": (GrantedMount("p", "nfs-projects", "a", True, None),)}, 1001, "matched"),
    ],
)
def test_refuses_what_the_invariants_forbid(change: dict[str, Any], uid: int, message: str) -> None:
    decision = dataclasses.replace(DECISION, **change)
    with pytest.raises(LaunchRefused, match=message):
        build_pod(Ident(uid), decision, REQUEST, decision_id=None)
    with pytest.raises(LaunchRefused, match=message):
        build_manifest(Ident(uid), decision, REQUEST, decision_id=None)


@pytest.mark.parametrize(
    "change",
    [
        {"run_as": RunAs(1001, 5001)},  # primary gid the user is not in
        {"supplemental_groups": (2001, 5001)},  # a group the user is not in
    ],
)
def test_refuses_groups_the_token_does_not_carry(change: dict[str, Any]) -> None:
    with pytest.raises(LaunchRefused, match="not in"):
        build_pod(Ident(1001), dataclasses.replace(DECISION, **change), REQUEST, decision_id=None)


def test_policy_cannot_widen_a_read_only_request() -> None:
    widened = dataclasses.replace(DECISION.mounts[0], read_only=False)  # asked "ro"
    decision = dataclasses.replace(DECISION, mounts=(widened, *DECISION.mounts[1:]))
    mounts = manifest(decision)["spec"]["containers"][0]["volumeMounts"]
    assert mounts[0]["mountPath"] == "/nfs/projects/ml/data" and mounts[0]["readOnly"] is True


def test_policy_cannot_mount_what_was_not_requested() -> None:
    extra = GrantedMount("home", "nfs-home", "bob", False, "/nfs/home/bob")
    decision = dataclasses.replace(DECISION, mounts=(*DECISION.mounts, extra))
    with pytest.raises(LaunchRefused, match="not requested"):
        build_pod(Ident(1001), decision, REQUEST, decision_id=None)


def test_bad_token_id_is_refused() -> None:
    with pytest.raises(ValueError, match="token id"):
        build_pod(Ident(1001, "../../x"), DECISION, REQUEST, decision_id=None)


# --- every generated pod: Kubernetes schema (strict) and the conftest rules ---------

VARIANTS: dict[str, dict[str, Any]] = {
    "full": EXPECTED,
    "minimal": pod_manifest(
        build_pod(
            Ident(1001),
            Decision(allow=True, run_as=RunAs(1001, 2001), supplemental_groups=(2001,)),
            JobRequest(project="ml-team", image="busybox", command=("true",)),
            decision_id=None,
        )
    ),
    "one-ro-mount": pod_manifest(
        build_pod(
            Ident(1001),
            dataclasses.replace(DECISION, mounts=DECISION.mounts[:1]),
            dataclasses.replace(REQUEST, mounts=(MountRequest("/nfs/projects/ml/data", "ro"),)),
            decision_id="d-2",
        )
    ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_pod_validates_against_the_kubernetes_schema_strictly(name: str) -> None:
    kubernetes_validate.validate(copy.deepcopy(VARIANTS[name]), k8s_schema_version(), strict=True)


def test_schema_check_is_strict() -> None:
    bad = copy.deepcopy(EXPECTED)
    bad["spec"]["securityContext"]["runAsUserName"] = "alice"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, k8s_schema_version(), strict=True)


CONFTEST_POLICY = ROOT / "policies" / "conftest"


def test_pods_pass_the_conftest_rules(tmp_path: Path) -> None:
    files = []
    for name, pod in VARIANTS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(pod))
        files.append(str(path))
    run = subprocess.run(
        [
            tool("conftest"),
            "test",
            "--namespace",
            "conftest.pod",
            "--policy",
            str(CONFTEST_POLICY),
            *files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
