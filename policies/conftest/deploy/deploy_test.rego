package conftest.deploy_test

import data.conftest.deploy

# The allowed sample (samples/allowed/server-deployment.yaml) as Rego.
good := {
	"apiVersion": "apps/v1",
	"kind": "Deployment",
	"metadata": {
		"name": "tokensvc-server",
		"namespace": "tokensvc",
	},
	"spec": {
		"replicas": 2,
		"selector": {"matchLabels": {"app": "tokensvc-server"}},
		"template": {
			"metadata": {"labels": {"app": "tokensvc-server"}},
			"spec": {
				"serviceAccountName": "tokensvc-server",
				"securityContext": {
					"runAsNonRoot": true,
					"runAsUser": 65532,
					"runAsGroup": 65532,
					"seccompProfile": {"type": "RuntimeDefault"},
				},
				"containers": [
					{
						"name": "server",
						"image": "registry.cluster.local/wsc/tokensvc:0.1.0",
						"args": [
							"server",
							"--opa-url",
							"http://127.0.0.1:8181",
						],
						"resources": {
							"requests": {
								"cpu": "250m",
								"memory": "256Mi",
							},
							"limits": {
								"cpu": "1",
								"memory": "512Mi",
							},
						},
						"securityContext": {
							"allowPrivilegeEscalation": false,
							"readOnlyRootFilesystem": true,
							"capabilities": {"drop": ["ALL"]},
						},
						"volumeMounts": [{
							"name": "keyring",
							"mountPath": "/etc/tokensvc/keyring",
							"readOnly": true,
						}],
					},
					{
						"name": "opa",
						"image": "openpolicyagent/opa:1.22.3-static",
						"args": [
							"run",
							"--server",
							"--addr=127.0.0.1:8181",
							"--diagnostic-addr=0.0.0.0:8282",
							"--config-file=/etc/opa/config.yaml",
							"--set-file=keys.wsc_bundle.key=/etc/opa/keys/bundle.pub",
						],
						"resources": {
							"requests": {
								"cpu": "100m",
								"memory": "128Mi",
							},
							"limits": {
								"cpu": "500m",
								"memory": "256Mi",
							},
						},
						"securityContext": {
							"allowPrivilegeEscalation": false,
							"readOnlyRootFilesystem": true,
							"capabilities": {"drop": ["ALL"]},
						},
						"volumeMounts": [{
							"name": "opa-config",
							"mountPath": "/etc/opa",
							"readOnly": true,
						}],
					},
				],
				"volumes": [
					{
						"name": "keyring",
						"secret": {
							"secretName": "tokensvc-keyring",
							"defaultMode": 256,
						},
					},
					{
						"name": "opa-config",
						"configMap": {"name": "opa-config"},
					},
				],
			},
		},
	},
}

server := "/spec/template/spec/containers/0"

set_image(image) := {"op": "replace", "path": concat("/", [server, "image"]), "value": image}

opa_args := "/spec/template/spec/containers/1/args"

# name -> {patch, want}: the good Deployment with a JSON patch must be denied with these messages.
cases := {
	"OPA on every interface": {
		"patch": [{
			"op": "replace", "path": opa_args,
			"value": ["run", "--server", "--addr=0.0.0.0:8181", "--config-file=c"],
		}],
		"want": {`container "opa": OPA must be started with --addr bound to 127.0.0.1 or localhost`},
	},
	"OPA with a separate --addr argument": {
		"patch": [{"op": "replace", "path": opa_args, "value": ["run", "--server", "--addr", ":8181", "--config-file=c"]}],
		"want": {`container "opa": OPA must be started with --addr bound to 127.0.0.1 or localhost`},
	},
	"OPA without --addr or a config file": {
		"patch": [{"op": "replace", "path": opa_args, "value": ["run", "--server"]}],
		"want": {
			`container "opa": OPA must be started with --addr bound to 127.0.0.1 or localhost`,
			`container "opa": OPA needs --config-file (bundle signing, masked decision logs)`,
		},
	},
	"a container named opa is OPA whatever its image": {
		"patch": [
			{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "reg/policy-engine:1"},
			{"op": "replace", "path": opa_args, "value": ["run", "--server", "--config-file=c"]},
		],
		"want": {`container "opa": OPA must be started with --addr bound to 127.0.0.1 or localhost`},
	},
	"key ring readable by all": {
		"patch": [{"op": "replace", "path": "/spec/template/spec/volumes/0/secret/defaultMode", "value": 420}],
		"want": {`Deployment tokensvc-server: Secret volume "keyring" must set defaultMode 0400 (256)`},
	},
	"key ring without a mode": {
		"patch": [{"op": "remove", "path": "/spec/template/spec/volumes/0/secret/defaultMode"}],
		"want": {`Deployment tokensvc-server: Secret volume "keyring" must set defaultMode 0400 (256)`},
	},
	"key ring mounted writable": {
		"patch": [{"op": "remove", "path": concat("/", [server, "volumeMounts/0/readOnly"])}],
		"want": {`container "server": Secret volume "keyring" must be mounted readOnly`},
	},
	"no limits": {
		"patch": [{"op": "remove", "path": concat("/", [server, "resources"])}],
		"want": {
			`container "server": resources.limits.cpu must be set`,
			`container "server": resources.limits.memory must be set`,
		},
	},
	"writable root filesystem": {
		"patch": [{"op": "remove", "path": concat("/", [server, "securityContext/readOnlyRootFilesystem"])}],
		"want": {`container "server": readOnlyRootFilesystem must be true`},
	},
	"image tagged latest": {
		"patch": [set_image("reg:5000/t:latest")],
		"want": {`container "server": image "reg:5000/t:latest" must be pinned (a tag but latest, or a digest)`},
	},
	"image without a tag": {
		"patch": [set_image("reg:5000/t")],
		"want": {`container "server": image "reg:5000/t" must be pinned (a tag but latest, or a digest)`},
	},
	"restricted applies to deploy workloads too": {
		"patch": [{"op": "add", "path": "/spec/template/spec/hostNetwork", "value": true}],
		"want": {"pod: hostNetwork must not be true"},
	},
}

test_the_allowed_sample_passes if {
	count(deploy.deny) == 0 with input as good
}

test_a_digest_pinned_image_passes if {
	pinned := json.patch(good, [set_image("r/wsc@sha256:0123abcd")])
	count(deploy.deny) == 0 with input as pinned
}

test_other_kinds_are_not_workloads if {
	count(deploy.deny) == 0 with input as {"kind": "Secret", "metadata": {"name": "tokensvc-keyring"}}
}

test_a_cronjob_is_a_workload if {
	cron := {
		"kind": "CronJob", "metadata": {"name": "rotate"},
		"spec": {"jobTemplate": {"spec": {"template": {"spec": good.spec.template.spec}}}},
	}
	count(deploy.deny) == 0 with input as cron
}

# On failure, `opa test -v --var-values` prints the failing case names.
test_every_denied_case_names_its_reason if {
	failing := {name |
		some name, tc in cases
		denied := deploy.deny with input as json.patch(good, tc.patch)
		not _includes(denied, tc.want)
	}
	count(failing) == 0
}

_includes(denied, want) if {
	every msg in want {
		msg in denied
	}
}
