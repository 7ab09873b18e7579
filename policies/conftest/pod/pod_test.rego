package conftest.pod_test

import data.conftest.pod

# The allowed sample (samples/allowed/job-pod.yaml) as Rego.
good := {
	"apiVersion": "v1",
	"kind": "Pod",
	"metadata": {
		"name": "wsc-job-0123456789abcdef0123456789abcdef",
		"namespace": "wsc-jobs",
		"labels": {
			"tokensvc.io/owner-uid": "1001",
			"tokensvc.io/project": "ml-team",
			"tokensvc.io/token-id": "0123456789abcdef0123456789abcdef",
		},
		"annotations": {
			"tokensvc.io/decision-id": "6f1c2b9e-3c1d-4d7e-9a55-0b6f5d0c1e2a",
			"tokensvc.io/priority": "5",
		},
	},
	"spec": {
		"automountServiceAccountToken": false,
		"restartPolicy": "Never",
		"securityContext": {
			"runAsNonRoot": true,
			"runAsUser": 1001,
			"runAsGroup": 2001,
			"supplementalGroups": [2001],
			"supplementalGroupsPolicy": "Strict",
			"seccompProfile": {"type": "RuntimeDefault"},
		},
		"containers": [{
			"name": "job",
			"image": "registry.cluster.local/wsc/job-runner:1.0.0",
			"command": [
				"/usr/bin/python3",
				"train.py",
			],
			"securityContext": {
				"allowPrivilegeEscalation": false,
				"capabilities": {"drop": ["ALL"]},
			},
			"volumeMounts": [
				{
					"name": "mount-0",
					"mountPath": "/nfs/projects/ml/data",
					"subPath": "ml/data",
				},
				{
					"name": "mount-1",
					"mountPath": "/nfs/datasets/imagenet",
					"subPath": "imagenet",
					"readOnly": true,
				},
			],
		}],
		"volumes": [
			{
				"name": "mount-0",
				"persistentVolumeClaim": {"claimName": "nfs-projects"},
			},
			{
				"name": "mount-1",
				"persistentVolumeClaim": {
					"claimName": "nfs-datasets",
					"readOnly": true,
				},
			},
		],
	},
}

# A Job wrapping the good pod's spec.
good_job := {
	"apiVersion": "batch/v1", "kind": "Job",
	"metadata": {"name": "wsc-job-x"},
	"spec": {"template": {"metadata": good.metadata, "spec": good.spec}},
}

container_sc := "/spec/containers/0/securityContext"

# name -> {patch, want}: the good pod with a JSON patch must be denied with (at least) these messages.
cases := {
	"runs as root": {
		"patch": [{"op": "replace", "path": "/spec/securityContext/runAsUser", "value": 0}],
		"want": {
			`container "job": runAsUser must be set and not 0`,
			"pod: runAsUser 0 must equal the tokensvc.io/owner-uid label 1001",
		},
	},
	"runs as group 0": {
		"patch": [{"op": "replace", "path": "/spec/securityContext/runAsGroup", "value": 0}],
		"want": {`container "job": runAsGroup must be set and not 0`},
	},
	"runAsUser unset": {
		"patch": [{"op": "remove", "path": "/spec/securityContext/runAsUser"}],
		"want": {`container "job": runAsUser must be set and not 0`},
	},
	"runAsNonRoot unset": {
		"patch": [{"op": "remove", "path": "/spec/securityContext/runAsNonRoot"}],
		"want": {`container "job": runAsNonRoot must be true`},
	},
	"container overrides runAsNonRoot": {
		"patch": [{"op": "add", "path": concat("/", [container_sc, "runAsNonRoot"]), "value": false}],
		"want": {`container "job": runAsNonRoot must be true`},
	},
	"container runs as another uid": {
		"patch": [{"op": "add", "path": concat("/", [container_sc, "runAsUser"]), "value": 1002}],
		"want": {`container "job": runAsUser 1002 differs from the pod's 1001`},
	},
	"privilege escalation allowed": {
		"patch": [{"op": "remove", "path": concat("/", [container_sc, "allowPrivilegeEscalation"])}],
		"want": {`container "job": allowPrivilegeEscalation must be false`},
	},
	"privileged with added capabilities": {
		"patch": [{"op": "replace", "path": concat("/", [container_sc, "capabilities"]), "value": {"add": ["NET_ADMIN"]}}],
		"want": {
			`container "job": capabilities must drop ALL`,
			`container "job": capabilities must not add ["NET_ADMIN"]`,
		},
	},
	"privileged": {
		"patch": [{"op": "add", "path": concat("/", [container_sc, "privileged"]), "value": true}],
		"want": {`container "job": privileged must not be true`},
	},
	"seccomp unconfined": {
		"patch": [{"op": "replace", "path": "/spec/securityContext/seccompProfile/type", "value": "Unconfined"}],
		"want": {`container "job": seccompProfile.type must be RuntimeDefault`},
	},
	"procMount unmasked": {
		"patch": [{"op": "add", "path": concat("/", [container_sc, "procMount"]), "value": "Unmasked"}],
		"want": {`container "job": procMount must be Default`},
	},
	"host port": {
		"patch": [{"op": "add", "path": "/spec/containers/0/ports", "value": [{"containerPort": 80, "hostPort": 80}]}],
		"want": {`container "job": hostPort must not be set`},
	},
	"host namespaces": {
		"patch": [
			{"op": "add", "path": "/spec/hostNetwork", "value": true},
			{"op": "add", "path": "/spec/hostPID", "value": true},
			{"op": "add", "path": "/spec/hostIPC", "value": true},
		],
		"want": {"pod: hostNetwork must not be true", "pod: hostPID must not be true", "pod: hostIPC must not be true"},
	},
	"group 0 and fsGroup 0": {
		"patch": [
			{"op": "replace", "path": "/spec/securityContext/supplementalGroups", "value": [0, 2001]},
			{"op": "add", "path": "/spec/securityContext/fsGroup", "value": 0},
		],
		"want": {"pod: supplementalGroups must not contain 0", "pod: fsGroup must not be 0"},
	},
	"unsafe sysctl": {
		"patch": [{"op": "add", "path": "/spec/securityContext/sysctls", "value": [{"name": "kernel.msgmax", "value": "1"}]}],
		"want": {`pod: sysctl "kernel.msgmax" is not in the safe set`},
	},
	"supplemental groups merged from the image": {
		"patch": [{"op": "replace", "path": "/spec/securityContext/supplementalGroupsPolicy", "value": "Merge"}],
		"want": {"pod: securityContext.supplementalGroupsPolicy must be Strict"},
	},
	"service-account token mounted": {
		"patch": [{"op": "remove", "path": "/spec/automountServiceAccountToken"}],
		"want": {"pod: automountServiceAccountToken must be false"},
	},
	"hostPath volume": {
		"patch": [{"op": "add", "path": "/spec/volumes/-", "value": {"name": "etc", "hostPath": {"path": "/etc"}}}],
		"want": {`volume "etc": hostPath volumes are not allowed`},
	},
	"inline nfs volume": {
		"patch": [{"op": "add", "path": "/spec/volumes/-", "value": {"name": "n", "nfs": {"server": "s", "path": "/p"}}}],
		"want": {`volume "n": inline nfs volumes are not allowed; mount NFS through a PersistentVolumeClaim`},
	},
	"other volume types": {
		"patch": [{"op": "add", "path": "/spec/volumes/-", "value": {"name": "g", "gitRepo": {"repository": "x"}}}],
		"want": {`volume "g": gitRepo volumes are not allowed by Pod Security restricted`},
	},
	"claim without a name": {
		"patch": [{"op": "replace", "path": "/spec/volumes/0/persistentVolumeClaim", "value": {"readOnly": true}}],
		"want": {`volume "mount-0": a persistentVolumeClaim volume must name its claim`},
	},
	"labels missing": {
		"patch": [{"op": "replace", "path": "/metadata/labels", "value": {}}],
		"want": {
			"pod: label tokensvc.io/owner-uid is required",
			"pod: label tokensvc.io/project is required",
			"pod: label tokensvc.io/token-id is required",
			"pod: runAsUser 1001 must equal the tokensvc.io/owner-uid label null",
		},
	},
	"an init container is held to the same rules": {
		"patch": [{"op": "add", "path": "/spec/initContainers", "value": [{"name": "init", "image": "busybox:1.37"}]}],
		"want": {
			`container "init": allowPrivilegeEscalation must be false`,
			`container "init": capabilities must drop ALL`,
		},
	},
	"not a pod": {
		"patch": [{"op": "replace", "path": "/kind", "value": "ConfigMap"}],
		"want": {"kind ConfigMap: a job must be a Pod or a Job"},
	},
}

test_the_allowed_sample_passes if {
	count(pod.deny) == 0 with input as good
}

test_a_job_wrapping_the_pod_passes if {
	count(pod.deny) == 0 with input as good_job
}

# On failure, `opa test -v --var-values` prints the failing case names.
test_every_denied_case_names_its_reason if {
	failing := {name |
		some name, tc in cases
		denied := pod.deny with input as json.patch(good, tc.patch)
		not _includes(denied, tc.want)
	}
	count(failing) == 0
}

_includes(denied, want) if {
	every msg in want {
		msg in denied
	}
}
