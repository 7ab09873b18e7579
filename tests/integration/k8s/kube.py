"""A throwaway Kubernetes control plane for integration tests.

Starts etcd and kube-apiserver (built from Go modules by `make k8s-bins`,
see tools/k8s) on 127.0.0.1 with:

- TLS: a CA, a serving certificate and a service-account signing key made
  here with `cryptography`, in a private temporary directory;
- static token authentication for three identities: an admin
  (system:masters), the launcher's ServiceAccount identity (so the
  RoleBinding from deploy/k8s binds it exactly as it would in a cluster), and
  an identity with no bindings at all;
- RBAC authorization and the default admission chain (PodSecurity included).

No controller manager or scheduler runs: pods are stored, never scheduled,
and nothing creates ServiceAccounts for us, so `start()` makes the jobs
namespace (Pod Security "restricted") and its `default` ServiceAccount.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes.client
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes.dynamic import DynamicClient

from tokensvc.cluster.launcher import CONTAINER_NAME

REPO = Path(__file__).resolve().parents[3]
BIN_DIR = REPO / ".tools" / "bin"

SYSTEM_NAMESPACE = "tokensvc"
JOBS_NAMESPACE = "wsc-jobs"
LAUNCHER_SA = "tokensvc-launcher"
# The name Kubernetes gives a ServiceAccount as a user; RBAC subjects of kind
# ServiceAccount match it, so deploy/'s RoleBinding applies to this token.
LAUNCHER_USER = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{LAUNCHER_SA}"
# Restricted, and pinned to "latest" so the rules follow the server's version.
RESTRICTED_LABELS = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")
} | {"pod-security.kubernetes.io/enforce-version": "latest"}

START_TIMEOUT = 180.0  # a cold apiserver on a busy 2-core machine is slow
STOP_TIMEOUT = 20.0


class KubeStartError(RuntimeError):
    """The control plane did not come up; the message carries the log tail."""


class ApplyRefused(RuntimeError):
    """The API server refused a server-side apply; the message carries its Status."""


@dataclass(frozen=True)
class Identity:
    """A user the API server knows through --token-auth-file."""

    name: str
    token: str
    groups: tuple[str, ...]


@dataclass
class KubeAPI:
    """Handles to a running control plane, yielded by the `kube_api` fixture."""

    url: str  # https://127.0.0.1:<port>
    ca_path: Path  # PEM of the CA that signed the serving certificate
    workdir: Path  # certificates, logs, kubeconfigs
    identities: dict[str, Identity]  # "admin", "launcher", "nobody"
    jobs_namespace: str = JOBS_NAMESPACE
    _dynamic: dict[str, DynamicClient] = field(default_factory=dict, repr=False)

    @property
    def admin_token(self) -> str:
        return self.identities["admin"].token

    @property
    def launcher_token(self) -> str:
        return self.identities["launcher"].token

    def configuration(self, who: str = "admin") -> kubernetes.client.Configuration:
        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.ca_path)
        cfg.verify_ssl = True
        cfg.api_key = {"BearerToken": self.identities[who].token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        return cfg

    def api_client(self, who: str = "admin") -> kubernetes.client.ApiClient:
        """A fresh official-client ApiClient authenticated as `who`."""
        return kubernetes.client.ApiClient(self.configuration(who))

    def core(self, who: str = "admin") -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api_client(who))

    def dynamic(self, who: str = "admin") -> DynamicClient:
        """A discovery-backed client for arbitrary kinds (cached per identity)."""
        if who not in self._dynamic:
            cache = self.workdir / f"discovery-{who}.json"
            self._dynamic[who] = DynamicClient(self.api_client(who), cache_file=str(cache))
        return self._dynamic[who]

    def kubeconfig(self, who: str = "admin") -> Path:
        """Path of a kubeconfig file for `who` (what an operator or the launcher reads)."""
        return self.workdir / f"kubeconfig-{who}.yaml"

    def session(self, who: str = "admin") -> requests.Session:
        """A raw HTTPS session for endpoints the typed client lacks (e.g. /readyz)."""
        s = requests.Session()
        # Otherwise REQUESTS_CA_BUNDLE (set on many machines) silently wins
        # over s.verify, and proxies from the environment would apply.
        s.trust_env = False
        s.verify = str(self.ca_path)
        s.headers["Authorization"] = f"Bearer {self.identities[who].token}"
        return s


# --- certificates ---------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(directory: Path, extra_ips: Sequence[str] = ()) -> dict[str, Path]:
    """CA, serving cert for 127.0.0.1, ``extra_ips`` and the in-cluster names, SA signing key."""
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokensvc-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    srv_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),  # first IP of the service range
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
        *(
            x509.DNSName(n)
            for n in (
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            )
        ),
    ]
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    sa_key = ec.generate_private_key(ec.SECP256R1())
    paths = {
        "ca": directory / "ca.crt",
        "cert": directory / "apiserver.crt",
        "key": directory / "apiserver.key",
        "sa_key": directory / "sa.key",
        "sa_pub": directory / "sa.pub",
    }
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["key"], _pem_key(srv_key))
    _write_private(paths["sa_key"], _pem_key(sa_key))
    paths["sa_pub"].write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths


# --- processes --------------------------------------------------------------------


def ensure_binaries() -> dict[str, Path]:
    """Paths of etcd and kube-apiserver; builds them (never skips) when missing."""
    wanted = {name: BIN_DIR / name for name in ("etcd", "kube-apiserver", "kustomize")}
    if not all(p.exists() for p in wanted.values()):
        subprocess.run(["make", "-C", str(REPO), "k8s-bins"], check=True)
    return wanted


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise KubeStartError(
                f"{self.name} exited with {self.popen.returncode}:\n{_tail(self.log)}"
            )

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL; always reaps."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # In the child before exec: if pytest itself is killed (no fixture
    # teardown), the kernel sends SIGTERM, so no control plane outlives it.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    """Start argv with its output in workdir/<name>.log, in its own process group."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        # Own session: stop() signals the whole group, nothing is left behind.
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
            # Only a prctl, async-signal-safe enough; fixtures spawn from the main thread.
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )  # fmt: skip
    return Proc(name, popen, log)


def wait_ready(proc: Proc, ready: Callable[[], bool], what: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        proc.check_alive()
        with contextlib.suppress(requests.RequestException):
            if ready():
                return
        time.sleep(0.25)
    raise KubeStartError(f"{what} not ready in time:\n{_tail(proc.log)}")


def new_identities() -> dict[str, Identity]:
    """The identities every test control plane knows, each with a fresh token.

    "admin" (system:masters), "launcher" (the launcher's ServiceAccount user,
    bound by deploy/k8s's RBAC alone) and "nobody" (no bindings at all).
    """
    return {
        "admin": Identity("tokensvc-test-admin", secrets.token_urlsafe(32), ("system:masters",)),
        "launcher": Identity(
            LAUNCHER_USER,
            secrets.token_urlsafe(32),
            ("system:serviceaccounts", f"system:serviceaccounts:{SYSTEM_NAMESPACE}"),
        ),
        "nobody": Identity("tokensvc-test-nobody", secrets.token_urlsafe(32), ()),
    }


def _token_line(who: str, ident: Identity) -> str:
    # --token-auth-file CSV: token,user,uid[,"group1,group2"]
    groups = f',"{",".join(ident.groups)}"' if ident.groups else ""
    return f"{ident.token},{ident.name},uid-{who}{groups}\n"


def _write_kubeconfig(path: Path, api: KubeAPI, who: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {"server": api.url, "certificate-authority": str(api.ca_path)},
            }
        ],
        "users": [{"name": who, "user": {"token": api.identities[who].token}}],
        "contexts": [
            {
                "name": who,
                "context": {"cluster": "test", "user": who, "namespace": api.jobs_namespace},
            }
        ],
        "current-context": who,
    }
    _write_private(path, yaml.safe_dump(doc).encode())


def _bootstrap(api: KubeAPI) -> None:
    """What a controller manager and an admin would have done: jobs namespace + SA."""
    core = api.core("admin")
    core.create_namespace(
        kubernetes.client.V1Namespace(
            metadata=kubernetes.client.V1ObjectMeta(
                name=api.jobs_namespace, labels=dict(RESTRICTED_LABELS)
            )
        )
    )
    core.create_namespaced_service_account(
        api.jobs_namespace,
        kubernetes.client.V1ServiceAccount(
            metadata=kubernetes.client.V1ObjectMeta(name="default"),
            automount_service_account_token=False,
        ),
    )


@contextlib.contextmanager
def running_control_plane(workdir: Path) -> Iterator[KubeAPI]:
    """etcd + kube-apiserver up and bootstrapped for the body; both stopped after."""
    bins = ensure_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    pki = make_pki(workdir)

    identities = new_identities()
    token_file = workdir / "tokens.csv"
    _write_private(
        token_file,
        "".join(_token_line(who, i) for who, i in identities.items()).encode(),
    )

    etcd_port, peer_port, api_port = _free_ports(3)
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    procs: list[Proc] = []
    try:
        etcd = spawn(
            "etcd",
            [
                str(bins["etcd"]),
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",  # throwaway data; fsync dominates on slow disks
            ],
            workdir,
        )
        procs.append(etcd)
        deadline = time.monotonic() + START_TIMEOUT
        with requests.Session() as plain:
            plain.trust_env = False  # loopback: no proxies from the environment
            wait_ready(
                etcd,
                lambda: plain.get(f"{etcd_url}/health", timeout=2).json().get("health") == "true",
                "etcd",
                deadline,
            )

        apiserver = spawn(
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki['cert']}",
                f"--tls-private-key-file={pki['key']}",
                f"--token-auth-file={token_file}",
                "--anonymous-auth=false",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki['sa_pub']}",
                f"--service-account-signing-key-file={pki['sa_key']}",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--endpoint-reconciler-type=none",  # no nodes, nothing to reconcile
                "--profiling=false",
            ],
            workdir,
        )
        procs.append(apiserver)
        url = f"https://127.0.0.1:{api_port}"
        api = KubeAPI(url=url, ca_path=pki["ca"], workdir=workdir, identities=identities)
        with api.session("admin") as s:
            wait_ready(
                apiserver,
                lambda: s.get(f"{url}/readyz", timeout=5).status_code == 200,
                "kube-apiserver",
                deadline,
            )
        for who in identities:
            _write_kubeconfig(api.kubeconfig(who), api, who)
        _bootstrap(api)
        yield api
    finally:
        for proc in reversed(procs):
            proc.stop()


def resource_path(api: KubeAPI, doc: dict[str, Any]) -> str:
    """The REST path of the object `doc` describes (kind resolved by discovery)."""
    res = api.dynamic("admin").resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    meta = doc["metadata"]
    path: str = res.path(name=meta["name"], namespace=meta.get("namespace"))
    return path


def apply(
    api: KubeAPI,
    doc: dict[str, Any],
    *,
    who: str = "admin",
    dry_run: bool = False,
    check: bool = True,
) -> requests.Response:
    """Server-side apply of one object (`kubectl apply --server-side [--dry-run=server]`).

    Raw HTTP rather than the typed client so callers can read the response's
    Warning headers (Pod Security warn mode reports through them). With
    `check`, a refusal raises ApplyRefused carrying the server's Status.
    """
    params = {"fieldManager": "tokensvc-tests", "force": "true"}
    if dry_run:
        params["dryRun"] = "All"
    with api.session(who) as s:
        resp = s.patch(
            api.url + resource_path(api, doc),
            params=params,
            data=json.dumps(doc),
            headers={"Content-Type": "application/apply-patch+yaml"},
            timeout=30,
        )
    if check and resp.status_code >= 400:
        raise ApplyRefused(
            f"{doc['kind']}/{doc['metadata']['name']}: {resp.status_code} {resp.text}"
        )
    return resp


# --- what the scheduler and a kubelet would write, for a control plane without them ---


def bind_pod(api: KubeAPI, name: str, node: str) -> None:
    """What the scheduler does: bind the (released) pod ``name`` to ``node``."""
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    # The client cannot read the Status a binding answers with; the call raises on failure.
    api.core("admin").create_namespaced_pod_binding(
        name, api.jobs_namespace, body, _preload_content=False
    )


def report_job_container(
    api: KubeAPI,
    name: str,
    *,
    phase: str,
    state: dict[str, Any],
    image: str,
    user: dict[str, Any] | None = None,
) -> None:
    """What a kubelet writes: the pod's phase and its job container's state (and ``user.linux``)."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "state": state,
    }
    if user is not None:
        container["user"] = {"linux": user}
    status = {
        "phase": phase,
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [container],
    }
    api.core("admin").patch_namespaced_pod_status(name, api.jobs_namespace, {"status": status})


def apiserver_pid(kube_api: KubeAPI) -> int:
    """The kube-apiserver process serving ``kube_api`` (found by its --secure-port)."""
    flag = f"--secure-port={urlsplit(kube_api.url).port}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if args[0].endswith(b"kube-apiserver") and flag in args:
                    return int(entry)
    raise LookupError("kube-apiserver process not found")
