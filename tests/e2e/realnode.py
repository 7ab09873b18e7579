"""A real single-node Kubernetes cluster for the end-to-end tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built from
Go modules by `make k8s-bins`, tools/k8s), containerd with its runc shim
(tools/containerd) and a kubelet, with every piece of state under one
temporary directory. Start-up waits on readiness (each component's health
endpoint, the node's Ready condition, the jobs namespace's default
ServiceAccount), never on a fixed sleep.

Networking stays on this machine. etcd, the controller manager, the
scheduler and the kubelet's health endpoint listen on 127.0.0.1. The kubelet
cannot report a loopback node IP, and pods cannot reach the host's loopback,
so the cluster brings up its own bridge with one private address: the
kubelet and the API server serve there, and pods attach to that bridge in
network namespaces containerd creates under the cluster's state directory.
No masquerade, no gateway, no route in any pod, no iptables rule: nothing a
pod sends can leave the bridge.

Images come from `make images` and are imported into containerd before the
kubelet starts; pods use `imagePullPolicy: Never`, and containerd's sandbox
image is our own, so nothing is ever pulled.

The kubelet sets six kernel tunables at start (vm.overcommit_memory,
kernel.panic, ...). The cluster records them before and restores them after.
Teardown stops every process, unmounts every mount below the directory,
removes the bridge, the cgroups, the kubelet's log links and what containerd
and the kubelet write to fixed host paths (HOST_DIRS), and deletes the
directory; :func:`leftovers` lists whatever of that is still there.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client
import requests
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from integration.k8s.kube import (
    JOBS_NAMESPACE,
    RESTRICTED_LABELS,
    Identity,
    KubeAPI,
    KubeStartError,
    Proc,
    _free_ports,
    _pem_key,
    _tail,
    _token_line,
    _write_kubeconfig,
    _write_private,
    make_pki,
    new_identities,
    spawn,
)

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = REPO / ".tools" / "bin"
IMAGES_DIR = REPO / "build" / "images"
# Where Debian's packages put them (mk/node.mk checks they are there).
RUNC = Path("/usr/sbin/runc")
CNI_BIN_DIR = Path("/usr/lib/cni")

NODE_NAME = "tokensvc-e2e"
# Image names inside the archives (deploy/images/*.json); "tokensvc.local"
# is no registry, so nothing could be pulled even if a pull were attempted.
IMAGES = {
    "job": "tokensvc.local/job:0.1.0",
    "job-extra-group": "tokensvc.local/job-extra-group:0.1.0",
    "pause": "tokensvc.local/pause:0.1.0",
    "opa": "tokensvc.local/opa:1.22.3",
    "server": "tokensvc.local/tokensvc:0.1.0",
}
# The uid/gid the job image's /etc/passwd names, and the group the
# job-extra-group image's /etc/group adds to that user.
IMAGE_USER_UID = 10000
IMAGE_EXTRA_GID = 4242
# The extended resource every tokensvc pod requests (tokensvc.launcher);
# advertised on the node by hand, as a device plugin would.
SYSTEMS_RESOURCE = "tokensvc.io/systems"
SYSTEMS_CAPACITY = "4"

START_TIMEOUT = 240.0  # cold binaries on a busy 2-core machine
STOP_TIMEOUT = 30.0
# What the kubelet writes at start (pkg/kubelet/cm setupKernelTunables),
# plus forwarding, which nothing here may switch on.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
)
# Hard-coded in the kubelet (kuberuntime's legacy log links).
LEGACY_LOG_DIR = Path("/var/log/containers")
# Host directories the components write whatever their configuration says,
# and the program that writes each: containerd's shim package puts every
# shim's socket under /run/containerd/s; go-cni caches each attachment's
# result under /var/lib/cni; the kubelet's device manager opens its socket
# under /var/lib/kubelet/device-plugins. One the cluster created is removed
# once no such program (of this cluster or another) runs; in one that was
# already there only this cluster's own entries are removed.
HOST_DIRS = {
    Path("/run/containerd"): "containerd",
    Path("/var/lib/cni"): "containerd",
    Path("/var/lib/kubelet"): "kubelet",
}
CNI_RESULTS = Path("/var/lib/cni/results")
# Defaults of the components that the configuration moves below the
# cluster's directory; leftovers() reports any of them that appears.
MOVED_DEFAULTS = tuple(
    Path(p)
    for p in (
        "/etc/cdi",
        "/etc/cni",
        "/etc/kubernetes",
        "/opt/cni",
        "/opt/containerd",
        "/usr/libexec/kubernetes",
        "/var/lib/containerd",
        "/var/lib/kubelet/pki",
        "/var/lib/kubelet/pods",
        "/var/log/pods",
        "/run/netns",
        "/run/nri",
        "/run/cdi",
        "/run/containerd/runc",
        "/run/containerd/io.containerd.runtime.v2.task",
    )
)


@dataclass(frozen=True)
class HostState:
    """What the cluster changes outside its directory, recorded before it starts."""

    tunables: dict[str, str]
    legacy_log_dir_existed: bool
    host_dirs_existed: dict[Path, bool]
    absent_defaults: tuple[Path, ...]


@dataclass
class Cluster:
    """A running node; yielded by :func:`running_cluster`."""

    api: KubeAPI
    root: Path  # every file of the cluster is below it
    bridge: str
    bridge_ip: str
    cgroup_name: str  # the kubelet's cgroup root, one directory per hierarchy
    network: str  # the CNI network's name
    containerd_socket: Path
    node_name: str = NODE_NAME
    host: HostState | None = None
    procs: dict[str, Proc] = field(default_factory=dict)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ctr` against this cluster's containerd, in the CRI namespace."""
        return subprocess.run(
            [str(BIN_DIR / "ctr"), "--address", str(self.containerd_socket), "-n", "k8s.io", *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def core(self) -> kubernetes.client.CoreV1Api:
        return self.api.core("admin")

    def node(self) -> Any:
        return self.core().read_node(self.node_name)


# --- preflight -------------------------------------------------------------------


def ensure_built() -> None:
    """Node binaries and image archives; built (never skipped) when missing or stale.

    make decides: the server image follows the working tree's tokensvc, and
    a run of the tests must never deploy an image older than the code.
    """
    subprocess.run(["make", "-s", "-C", str(REPO), "node-bins", "images"], check=True)


def cgroup_hierarchies() -> list[Path]:
    """Mounted cgroup hierarchies, v1 and v2 (runc's cgroupfs manager uses each)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            out.append(Path(left.split()[4]))
    return sorted(out)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.222.0.0/16 that no host address or route touches."""
    used = subprocess.run(
        ["ip", "-4", "-o", "route", "show", "table", "all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    used += subprocess.run(
        ["ip", "-4", "-o", "addr"], check=True, capture_output=True, text=True
    ).stdout
    taken = [
        ipaddress.ip_network(m, strict=False)
        for m in re.findall(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", used)
    ]
    for _ in range(64):
        net = ipaddress.ip_network(f"10.222.{secrets.randbelow(256)}.0/24")
        if not any(net.overlaps(t) for t in taken if t.prefixlen > 0):
            return net
    raise KubeStartError("no free /24 in 10.222.0.0/16 for the node bridge")


# --- certificates ----------------------------------------------------------------


def make_kubelet_client_pki(directory: Path) -> dict[str, Path]:
    """A CA the kubelet trusts and the API server's client certificate from it.

    The kubelet accepts only this certificate (no anonymous access, no
    tokens), so no other local user can reach pods through the kubelet's API.
    """
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokensvc-test-kubelet-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": directory / "kubelet-client-ca.crt",
        "cert": directory / "apiserver-kubelet-client.crt",
        "key": directory / "apiserver-kubelet-client.key",
    }
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["key"], _pem_key(key))
    return paths


# --- configuration files -----------------------------------------------------------


def _containerd_config(root: Path, sock: Path) -> str:
    # Every path containerd would otherwise put on the host (/var/lib,
    # /run, /opt, /etc/cni, /etc/cdi, /var/run/netns) is set below root;
    # NRI is off (it would open a socket under /var/run/nri).
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return f"""\
version = 3
root = "{root}/containerd/root"
state = "{root}/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"

[plugins.'io.containerd.internal.v1.opt']
  path = "{root}/containerd/opt"

[{cri_runtime}]
  enable_selinux = false
  # This machine's root lacks CAP_SYS_RESOURCE: a negative oom_score_adj
  # cannot be written, and every sandbox would fail to start.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = ["{root}/cdi"]
  [{cri_runtime}.containerd]
    default_runtime_name = "runc"
    [{cri_runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri_runtime}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{root}/runc"
        SystemdCgroup = false
  [{cri_runtime}.cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{root}/cni/net.d"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{IMAGES["pause"]}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def _cni_config(
    network: str, bridge: str, subnet: ipaddress.IPv4Network, root: Path
) -> dict[str, Any]:
    gateway = str(next(subnet.hosts()))  # the bridge's own address, never handed out
    return {
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                # No gateway: no route in the pod, no forwarding switched on.
                "isGateway": False,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(subnet), "gateway": gateway}]],
                    "dataDir": str(root / "cni" / "ipam"),
                },
            }
        ],
    }


def _kubelet_config(
    c: Cluster, root: Path, kubelet_port: int, healthz_port: int, client_ca: Path
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": c.bridge_ip,
        "port": kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        # Only the API server's client certificate gets in.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{c.containerd_socket}",
        # cgroup v1 here, no systemd managing cgroups.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupRoot": f"/{c.cgroup_name}",
        # No CAP_SYS_RESOURCE: the kubelet must not lower its own oom score.
        "oomScoreAdj": 0,
        "makeIPTablesUtilChains": False,
        "podLogsDir": str(root / "pod-logs"),
        "volumePluginDir": str(root / "kubelet-plugins"),
        "resolvConf": str(root / "resolv.conf"),
        "failSwapOn": False,
        "registerNode": True,
        # Throwaway node on a shared disk: evict only when truly out of room,
        # never collect the imported images (nothing could pull them back).
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "5s",
        "featureGates": {"SupplementalGroupsPolicy": True},
    }


# --- host state ---------------------------------------------------------------------


def _read_tunables() -> dict[str, str]:
    return {t: (Path("/proc/sys") / t).read_text().strip() for t in KERNEL_TUNABLES}


def _restore_tunables(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys") / name
        if path.read_text().strip() != value:
            path.write_text(value + "\n")


def mounts_below(root: Path) -> list[str]:
    """Mount points at or below root, deepest first (the order to unmount them)."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(prefix):
            points.append(point)
    return sorted(points, key=lambda p: (-p.count("/"), p))


def _unmount_all(root: Path) -> None:
    # A mount can hide another below it, and a busy one needs a second pass
    # once the process holding it is gone: repeat until nothing is left.
    for _ in range(5):
        points = mounts_below(root)
        if not points:
            return
        for p in points:
            subprocess.run(["umount", "--lazy", p], check=False, capture_output=True)


def _remove_cgroups(name: str) -> None:
    # rmdir only, deepest first: the kernel refuses a cgroup that still has
    # processes, so nothing alive is ever yanked out from under a process.
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / name
        if not top.exists():
            continue
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: -len(p.parts))
        for d in dirs:
            with contextlib.suppress(FileNotFoundError):
                d.rmdir()


def _remove_log_links(root: Path, host: HostState) -> None:
    if LEGACY_LOG_DIR.is_dir():
        for link in LEGACY_LOG_DIR.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(root) + "/"):
                link.unlink()
        if not host.legacy_log_dir_existed and not any(LEGACY_LOG_DIR.iterdir()):
            LEGACY_LOG_DIR.rmdir()


def _our_cni_results(network: str) -> list[Path]:
    # go-cni names each cached result <network>-<sandbox id>-<interface>;
    # the loopback attachment of the same sandbox is cni-loopback-<id>-lo.
    if not CNI_RESULTS.is_dir():
        return []
    ours = [p for p in CNI_RESULTS.iterdir() if p.name.startswith(network + "-")]
    ids = [p.name[len(network) + 1 :].rpartition("-")[0] for p in ours]
    return ours + [
        CNI_RESULTS / f"cni-loopback-{i}-lo"
        for i in ids
        if (CNI_RESULTS / f"cni-loopback-{i}-lo").exists()
    ]


def _remove_host_dirs(c: Cluster, host: HostState) -> None:
    for path in _our_cni_results(c.network):
        path.unlink(missing_ok=True)
    for path, program in HOST_DIRS.items():
        if not host.host_dirs_existed[path] and not _running(program):
            shutil.rmtree(path, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether pid is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _running(program: str) -> bool:
    """Whether any live process's name starts with `program` (containerd: shims too)."""
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if (
                proc.name.isdigit()
                and (proc / "comm").read_text().startswith(program)
                and alive(int(proc.name))
            ):
                return True
    return False


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains text."""
    return [int(line.split(":", 1)[0]) for line in _processes_mentioning(text)]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmd:
                found.append(f"{proc.name}: {cmd.strip()}")
    return found


def leftovers(c: Cluster) -> list[str]:
    """Everything of this cluster still on the host (empty after a clean teardown)."""
    left = [f"process {p}" for p in _processes_mentioning(str(c.root))]
    left += [f"mount {m}" for m in mounts_below(c.root)]
    if c.root.exists():
        left.append(f"directory {c.root}")
    if Path(f"/sys/class/net/{c.bridge}").exists():
        left.append(f"link {c.bridge}")
    left += [
        f"cgroup {h / c.cgroup_name}" for h in cgroup_hierarchies() if (h / c.cgroup_name).exists()
    ]
    if LEGACY_LOG_DIR.is_dir():
        left += [
            f"log link {p}"
            for p in LEGACY_LOG_DIR.iterdir()
            if p.is_symlink() and os.readlink(p).startswith(str(c.root) + "/")
        ]
    if c.host is not None:
        now = _read_tunables()
        left += [
            f"sysctl {k}={now[k]} (was {v})" for k, v in c.host.tunables.items() if now[k] != v
        ]
        if not c.host.legacy_log_dir_existed and LEGACY_LOG_DIR.exists():
            left.append(f"directory {LEGACY_LOG_DIR}")
        left += [
            f"directory {p}"
            for p, existed in c.host.host_dirs_existed.items()
            if not existed and p.exists()
        ]
        left += [f"host default {p}" for p in c.host.absent_defaults if p.exists()]
    left += [f"file {p}" for p in _our_cni_results(c.network)]
    if shutil.which("iptables-save"):
        rules = subprocess.run(
            ["iptables-save"], check=False, capture_output=True, text=True
        ).stdout
        left += [
            f"iptables {line}"
            for line in rules.splitlines()
            if c.bridge in line or c.bridge_ip in line
        ]
    return left


# --- start-up ---------------------------------------------------------------------------


def _get_ok(url: str, **kw: Any) -> bool:
    with requests.Session() as s:
        s.trust_env = False
        return s.get(url, timeout=5, **kw).status_code == 200


def _wait_for(what: str, check: Any, procs: dict[str, Proc], deadline: float) -> Any:
    """Poll check() until it returns something truthy; any dead component fails it."""
    while time.monotonic() < deadline:
        for p in procs.values():
            p.check_alive()
        with contextlib.suppress(
            requests.RequestException, kubernetes.client.exceptions.ApiException
        ):
            result = check()
            if result:
                return result
        time.sleep(0.25)
    logs = "\n".join(f"--- {n}\n{_tail(p.log, 15)}" for n, p in procs.items())
    raise KubeStartError(f"{what} not ready in time:\n{logs}")


def _node_ready(c: Cluster) -> bool:
    node = c.node()
    return any(
        cond.type == "Ready" and cond.status == "True" for cond in node.status.conditions or []
    )


def _advertise_systems(c: Cluster) -> None:
    # What a device plugin does for real systems: capacity in the node's status.
    patch = [
        {
            "op": "add",
            "path": f"/status/capacity/{SYSTEMS_RESOURCE.replace('/', '~1')}",
            "value": SYSTEMS_CAPACITY,
        }
    ]
    with c.api.session("admin") as s:
        resp = s.patch(
            f"{c.api.url}/api/v1/nodes/{c.node_name}/status",
            data=json.dumps(patch),
            headers={"Content-Type": "application/json-patch+json"},
            timeout=30,
        )
    resp.raise_for_status()


def _jobs_namespace(c: Cluster, deadline: float) -> None:
    core = c.core()
    core.create_namespace(
        kubernetes.client.V1Namespace(
            metadata=kubernetes.client.V1ObjectMeta(
                name=c.api.jobs_namespace, labels=dict(RESTRICTED_LABELS)
            )
        )
    )
    # The controller manager's ServiceAccount controller makes "default";
    # until it has, the ServiceAccount admission plugin refuses every pod.
    _wait_for(
        "default ServiceAccount",
        lambda: core.read_namespaced_service_account("default", c.api.jobs_namespace),
        c.procs,
        deadline,
    )


def _start(c: Cluster, host_ip_net: ipaddress.IPv4Network) -> None:
    root = c.root
    deadline = time.monotonic() + START_TIMEOUT
    # The API server serves on the node's bridge address: pods reach it
    # there (the deployed server's launcher), and so does the host.
    pki = make_pki(root, extra_ips=(c.bridge_ip,))
    kpki = make_kubelet_client_pki(root)
    identities = {
        **new_identities(),
        # The names the bootstrap RBAC policy and the Node authorizer expect.
        "controller-manager": Identity(
            "system:kube-controller-manager", secrets.token_urlsafe(32), ()
        ),
        "scheduler": Identity("system:kube-scheduler", secrets.token_urlsafe(32), ()),
        "kubelet": Identity(
            f"system:node:{c.node_name}", secrets.token_urlsafe(32), ("system:nodes",)
        ),
    }
    token_file = root / "tokens.csv"
    _write_private(token_file, "".join(_token_line(w, i) for w, i in identities.items()).encode())

    (etcd_port, peer_port, api_port, cm_port, sched_port, kubelet_port, healthz_port) = _free_ports(
        7
    )
    # Node networking: our bridge, with the address the kubelet reports and
    # the API server serves on.
    subprocess.run(["ip", "link", "add", c.bridge, "type", "bridge"], check=True)
    subprocess.run(
        ["ip", "addr", "add", f"{c.bridge_ip}/{host_ip_net.prefixlen}", "dev", c.bridge], check=True
    )
    subprocess.run(["ip", "link", "set", c.bridge, "up"], check=True)

    etcd_url = f"http://127.0.0.1:{etcd_port}"
    c.procs["etcd"] = spawn(
        "etcd",
        [
            str(BIN_DIR / "etcd"),
            f"--data-dir={root / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
        ],
        root,
    )
    _wait_for("etcd", lambda: _get_ok(f"{etcd_url}/health"), c.procs, deadline)

    c.procs["kube-apiserver"] = spawn(
        "kube-apiserver",
        [
            str(BIN_DIR / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            # Not loopback: pods cannot reach the host's 127.0.0.1. Without
            # kube-proxy the `kubernetes` Service's address leads nowhere, so
            # in-cluster clients are pointed here (tests/e2e/deployed.py).
            f"--bind-address={c.bridge_ip}",
            f"--advertise-address={c.bridge_ip}",
            f"--secure-port={api_port}",
            f"--cert-dir={root / 'apiserver-certs'}",
            f"--tls-cert-file={pki['cert']}",
            f"--tls-private-key-file={pki['key']}",
            f"--token-auth-file={token_file}",
            "--anonymous-auth=false",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={kpki['cert']}",
            f"--kubelet-client-key={kpki['key']}",
            # The node's address, never its name: a name would be looked up
            # in the host's DNS, off this machine.
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki['sa_pub']}",
            f"--service-account-signing-key-file={pki['sa_key']}",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ],
        root,
    )
    url = f"https://{c.bridge_ip}:{api_port}"
    c.api = KubeAPI(url=url, ca_path=pki["ca"], workdir=root, identities=identities)
    for who in identities:
        _write_kubeconfig(c.api.kubeconfig(who), c.api, who)
    with c.api.session("admin") as s:
        _wait_for(
            "kube-apiserver",
            lambda: s.get(f"{url}/readyz", timeout=5).status_code == 200,
            c.procs,
            deadline,
        )

    c.procs["kube-controller-manager"] = spawn(
        "kube-controller-manager",
        [
            str(BIN_DIR / "kube-controller-manager"),
            f"--kubeconfig={c.api.kubeconfig('controller-manager')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={cm_port}",
            f"--cert-dir={root / 'cm-certs'}",
            # Created at start; the default is a host directory.
            f"--flex-volume-plugin-dir={root / 'cm-flexvolume'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--root-ca-file={pki['ca']}",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--allocate-node-cidrs=false",
            "--profiling=false",
            # Quick to lift the not-ready taint once the kubelet reports Ready.
            "--node-monitor-period=1s",
        ],
        root,
    )
    c.procs["kube-scheduler"] = spawn(
        "kube-scheduler",
        [
            str(BIN_DIR / "kube-scheduler"),
            f"--kubeconfig={c.api.kubeconfig('scheduler')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            f"--cert-dir={root / 'scheduler-certs'}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        root,
    )

    (root / "cni" / "net.d").mkdir(parents=True)
    (root / "cni" / "net.d" / "10-tokensvc-e2e.conflist").write_text(
        json.dumps(_cni_config(c.network, c.bridge, host_ip_net, root), indent=2)
    )
    (root / "resolv.conf").write_text("")  # pods get no name servers of the host's

    # The kubelet's cgroup root must exist in every hierarchy before it starts.
    for hierarchy in cgroup_hierarchies():
        (hierarchy / c.cgroup_name).mkdir()

    config = root / "containerd.toml"
    config.write_text(_containerd_config(root, c.containerd_socket))
    env = dict(os.environ, PATH=f"{BIN_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    c.procs["containerd"] = spawn(
        "containerd",
        [
            str(BIN_DIR / "containerd"),
            "--config",
            str(config),
            "--log-level",
            "info",
        ],
        root,
        env=env,
    )
    _wait_for(
        "containerd", lambda: c.ctr("version", check=False).returncode == 0, c.procs, deadline
    )
    for name in IMAGES:
        c.ctr("images", "import", "--snapshotter", "overlayfs", str(IMAGES_DIR / f"{name}.tar"))
    imported = c.ctr("images", "list", "--quiet").stdout.split()
    missing = [ref for ref in IMAGES.values() if ref not in imported]
    if missing:
        raise KubeStartError(f"images not imported: {missing} (have {imported})")

    kubelet_root = root / "kubelet"
    kubelet_root.mkdir()
    kconf = root / "kubelet.yaml"
    kconf.write_text(
        yaml.safe_dump(_kubelet_config(c, root, kubelet_port, healthz_port, kpki["ca"]))
    )
    c.procs["kubelet"] = spawn(
        "kubelet",
        [
            str(BIN_DIR / "kubelet"),
            f"--config={kconf}",
            f"--kubeconfig={c.api.kubeconfig('kubelet')}",
            # Not derived from --root-dir: the default is /var/lib/kubelet/pki.
            f"--cert-dir={kubelet_root / 'pki'}",
            f"--root-dir={kubelet_root}",
            f"--hostname-override={c.node_name}",
            f"--node-ip={c.bridge_ip}",
            "--v=2",
        ],
        root,
        env=env,
    )
    _wait_for(
        "kubelet healthz",
        lambda: _get_ok(f"http://127.0.0.1:{healthz_port}/healthz"),
        c.procs,
        deadline,
    )
    _wait_for("node Ready", lambda: _node_ready(c), c.procs, deadline)
    _advertise_systems(c)
    _jobs_namespace(c, deadline)
    # The node-lifecycle controller lifts node.kubernetes.io/not-ready once it
    # has seen Ready; the scheduler places nothing before that.
    _wait_for(
        "node untainted",
        lambda: not [t for t in c.node().spec.taints or [] if t.effect == "NoSchedule"],
        c.procs,
        deadline,
    )


def _delete_pods(c: Cluster) -> None:
    # Through the API, so the kubelet stops each sandbox and CNI releases its
    # veth and address; then wait until the runtime has no task left.
    core = c.core()
    # An API server that cannot answer leaves the work to the ctr pass below.
    with contextlib.suppress(
        kubernetes.client.exceptions.ApiException, urllib3.exceptions.HTTPError
    ):
        for ns in core.list_namespace().items:
            core.delete_collection_namespaced_pod(ns.metadata.name, grace_period_seconds=0)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if not core.list_pod_for_all_namespaces().items:
                break
            time.sleep(0.25)


def _stop(c: Cluster) -> None:
    if "kubelet" in c.procs and c.procs["kubelet"].popen.poll() is None:
        _delete_pods(c)
    for name in ("kubelet", "kube-scheduler", "kube-controller-manager"):
        if name in c.procs:
            c.procs[name].stop()
    if "containerd" in c.procs and c.procs["containerd"].popen.poll() is None:
        # Whatever the kubelet left: kill each task (its shim exits with it).
        with contextlib.suppress(subprocess.SubprocessError):
            for task in c.ctr("tasks", "list", "--quiet", check=False).stdout.split():
                c.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
            deadline = time.monotonic() + STOP_TIMEOUT
            while c.ctr("tasks", "list", "--quiet", check=False).stdout.split():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            for cid in c.ctr("containers", "list", "--quiet", check=False).stdout.split():
                c.ctr("tasks", "delete", "--force", cid, check=False)
                c.ctr("containers", "delete", cid, check=False)
    for name in ("containerd", "kube-apiserver", "etcd"):
        if name in c.procs:
            c.procs[name].stop()
    # Shims and containers the runtime lost track of are still ours: their
    # command lines name the cluster's directory.
    # A process on its way out can no longer show its command line: wait on
    # the pids themselves.
    pids = pids_mentioning(str(c.root))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A Ready single-node cluster for the body; everything of it removed after."""
    if os.geteuid() != 0:
        raise KubeStartError("the end-to-end cluster needs root")
    ensure_built()
    sweep_stale()
    suffix = secrets.token_hex(2)
    root = Path(tempfile.mkdtemp(prefix="tokensvc-e2e-"))
    subnet = _free_subnet()
    c = Cluster(
        api=None,  # type: ignore[arg-type]  # set once the API server is up
        root=root,
        bridge=f"tke2e{suffix}",
        bridge_ip=str(next(subnet.hosts())),
        cgroup_name=f"tokensvc-e2e-{suffix}",
        network=f"tokensvc-e2e-{suffix}",
        containerd_socket=root / "containerd" / "containerd.sock",
        host=HostState(
            tunables=_read_tunables(),
            legacy_log_dir_existed=LEGACY_LOG_DIR.exists(),
            host_dirs_existed={p: p.exists() for p in HOST_DIRS},
            absent_defaults=tuple(p for p in MOVED_DEFAULTS if not p.exists()),
        ),
    )
    try:
        _write_record(c)
        _start(c, subnet)
        yield c
    finally:
        teardown(c)


def teardown(c: Cluster) -> None:
    """Stop everything and remove every trace; safe to call on a half-started cluster."""
    try:
        _stop(c)
    finally:
        _remove_traces(c)


def _remove_traces(c: Cluster) -> None:
    assert c.host is not None
    _unmount_all(c.root)
    subprocess.run(["ip", "link", "del", c.bridge], check=False, capture_output=True)
    _remove_cgroups(c.cgroup_name)
    _remove_log_links(c.root, c.host)
    _remove_host_dirs(c, c.host)
    _restore_tunables(c.host.tunables)
    if not mounts_below(c.root):  # never delete through a mount
        shutil.rmtree(c.root, ignore_errors=True)


# Written into each cluster's directory before anything is started, so a
# later run can remove what a killed one (no fixture teardown) left.
RECORD = "cluster.json"


def _write_record(c: Cluster) -> None:
    assert c.host is not None
    record = {
        "bridge": c.bridge,
        "bridge_ip": c.bridge_ip,
        "cgroup_name": c.cgroup_name,
        "network": c.network,
        "tunables": c.host.tunables,
        "legacy_log_dir_existed": c.host.legacy_log_dir_existed,
        "host_dirs_existed": {str(p): e for p, e in c.host.host_dirs_existed.items()},
        "absent_defaults": [str(p) for p in c.host.absent_defaults],
    }
    (c.root / RECORD).write_text(json.dumps(record))


def sweep_stale() -> list[Path]:
    """Remove the traces of earlier clusters whose processes are all gone.

    A cluster some process still mentions is alive (another test session's,
    perhaps) and is left alone. Returns the directories swept.
    """
    swept = []
    for root in Path(tempfile.gettempdir()).glob("tokensvc-e2e-*"):
        if not (root / RECORD).is_file() or _processes_mentioning(str(root)):
            continue
        r = json.loads((root / RECORD).read_text())
        stale = Cluster(
            api=None,  # type: ignore[arg-type]  # nothing is asked of the API any more
            root=root,
            bridge=r["bridge"],
            bridge_ip=r["bridge_ip"],
            cgroup_name=r["cgroup_name"],
            network=r["network"],
            containerd_socket=root / "containerd" / "containerd.sock",
            host=HostState(
                tunables=r["tunables"],
                legacy_log_dir_existed=r["legacy_log_dir_existed"],
                host_dirs_existed={Path(p): e for p, e in r["host_dirs_existed"].items()},
                absent_defaults=tuple(Path(p) for p in r["absent_defaults"]),
            ),
        )
        _remove_traces(stale)
        swept.append(root)
    return swept


__all__ = [
    "IMAGES",
    "IMAGE_EXTRA_GID",
    "IMAGE_USER_UID",
    "JOBS_NAMESPACE",
    "SYSTEMS_RESOURCE",
    "Cluster",
    "alive",
    "leftovers",
    "pids_mentioning",
    "running_cluster",
    "sweep_stale",
]
