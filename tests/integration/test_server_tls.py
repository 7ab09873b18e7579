"""The server over HTTPS: the user-node CLI verifies it against server_ca; plain HTTP fails.

Bearer tokens are single-use and short-lived, but on a shared network they
should still never travel in clear text: this is the deployment shape.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from admission_stack import forge_token, needs_root, opa_binary, run_as
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.opa import OpaHandle

from tokensvc.cluster.devstack import USER_A, Stack

pytestmark = [needs_root, pytest.mark.root]


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokensvc test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.chmod(0o644)
    return cert_path, key_path


@pytest.fixture(scope="module")
def stack(opa: OpaHandle) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="tsvc-tls-", dir="/tmp"))
    workdir.chmod(0o755)
    cert, key = self_signed(workdir)
    stack = Stack(
        workdir=workdir,
        opa=opa_binary(),
        external_opa=opa.url,
        server_settings={"tls_cert": str(cert), "tls_key": str(key)},
        server_ca=cert,
        realm="test",
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        stack.remove()


def test_cli_submits_over_verified_https(stack: Stack) -> None:
    assert stack.server_url.startswith("https://")
    run = run_as(stack, USER_A, "submit", "--project", "ml-team", "--image", "b", "--", "true")
    assert run.code == 0, run.err


def test_https_needs_the_right_ca(stack: Stack) -> None:
    token = forge_token(stack, USER_A)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{stack.server_url}/v1/jobs", timeout=10)  # system CAs: not trusted
    resp = requests.get(
        f"{stack.server_url}/v1/jobs",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(stack.server_ca),
        timeout=10,
    )
    assert resp.status_code == 200


def test_plain_http_is_not_served(stack: Stack) -> None:
    plain = stack.server_url.replace("https://", "http://")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{plain}/healthz", timeout=10)
