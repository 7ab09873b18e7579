"""Build the signed OPA policy bundle (`make bundle`).

Stages the policies (policies/wsc and policies/system, without tests) and the
admin data (policies/data) into a bundle directory, refuses admin data that
data.wsc.datacheck flags, then runs `opa build` with a .manifest carrying the
revision (the git commit) and the bundle's roots, signed with the private key
at --signing-key (RS256). OPA verifies that signature before it activates the
bundle (deploy/opa/config.yaml).

Importable: tests/support/opa.py uses build_bundle() and
generate_signing_key().
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

REPO = Path(__file__).resolve().parent.parent
POLICY_DIRS = ("wsc", "system")  # under policies/; each is also a bundle root prefix
ROOTS = ("wsc", "system/log")
DEFAULT_DATA_DIR = REPO / "policies" / "data"
DATA_FILES = ("data.json", "data.yaml", "data.yml")
KEY_BITS = 3072


def default_opa() -> str:
    """The pinned OPA from .tools/bin, else whatever `opa` is on PATH."""
    pinned = REPO / ".tools" / "bin" / "opa"
    return str(pinned) if pinned.exists() else "opa"


def git_revision(repo: Path = REPO) -> str:
    """The checked-out commit; "dev" only when this is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "dev"
    return out.stdout.strip()


def public_key_path(signing_key: Path) -> Path:
    """Where the public half of signing_key lives (OPA's keys.<id>.key)."""
    return signing_key.with_name(signing_key.name + ".pub")


def generate_signing_key(path: Path) -> Path:
    """Create an RSA private key (mode 0600, never overwritten) and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    write_public_key(path)
    return path


def write_public_key(signing_key: Path) -> Path:
    """Derive and write the public key of the PEM private key at signing_key."""
    key = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out = public_key_path(signing_key)
    out.write_bytes(pub)
    return out


def stage(dest: Path, *, data_dir: Path, revision: str, policies: Path = REPO / "policies") -> None:
    """Lay out the bundle directory: policies without tests, data, .manifest."""
    for top in POLICY_DIRS:
        for src in sorted((policies / top).rglob("*.rego")):
            if src.name.endswith("_test.rego"):
                continue
            target = dest / src.relative_to(policies)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    for src in sorted(data_dir.rglob("*")):
        if src.name in DATA_FILES:
            target = dest / src.relative_to(data_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    manifest = {"revision": revision, "roots": list(ROOTS)}
    (dest / ".manifest").write_text(json.dumps(manifest, indent=2) + "\n")


def data_errors(bundle_dir: Path, *, opa: str) -> list[str]:
    """data.wsc.datacheck.errors of the staged bundle (empty when the data is valid)."""
    out = subprocess.run(
        [opa, "eval", "--bundle", str(bundle_dir), "--format", "json", "data.wsc.datacheck.errors"],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout)["result"][0]["expressions"][0]["value"]
    return sorted(result)


def build_bundle(
    out: Path,
    *,
    signing_key: Path | None,
    data_dir: Path = DEFAULT_DATA_DIR,
    revision: str | None = None,
    opa: str | None = None,
) -> Path:
    """Build the bundle at out; signed unless signing_key is None. Returns out."""
    opa = opa or default_opa()
    revision = revision or git_revision()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wsc-bundle-") as tmp:
        staged = Path(tmp) / "bundle"
        stage(staged, data_dir=data_dir, revision=revision)
        errors = data_errors(staged, opa=opa)
        if errors:
            raise ValueError("invalid admin data:\n  " + "\n  ".join(errors))
        # Built from inside the staging dir so file names in the bundle are
        # /wsc/..., not the temporary path (reproducible, nothing leaked).
        cmd = [opa, "build", "--bundle", ".", "--output", str(out.resolve())]
        cmd += ["--revision", revision]
        if signing_key is not None:
            cmd += ["--signing-key", str(signing_key.resolve()), "--signing-alg", "RS256"]
        subprocess.run(cmd, check=True, cwd=staged)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bundles" / "build" / "wsc.tar.gz")
    parser.add_argument("--signing-key", type=Path, help="PEM RSA private key (RS256)")
    parser.add_argument(
        "--generate-key", action="store_true", help="create --signing-key first if it is missing"
    )
    parser.add_argument("--unsigned", action="store_true", help="build without a signature")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--revision", help="default: git rev-parse HEAD, or dev")
    parser.add_argument("--opa", default=None)
    args = parser.parse_args(argv)
    if args.unsigned == (args.signing_key is not None):
        parser.error("give exactly one of --signing-key or --unsigned")
    if args.signing_key is not None:
        if not args.signing_key.exists():
            if not args.generate_key:
                parser.error(f"{args.signing_key}: no such key (use --generate-key for a dev key)")
            generate_signing_key(args.signing_key)
            print(f"generated dev signing key {args.signing_key} (never commit it)")
        if not public_key_path(args.signing_key).exists():
            write_public_key(args.signing_key)
    try:
        out = build_bundle(
            args.out,
            signing_key=args.signing_key,
            data_dir=args.data_dir,
            revision=args.revision,
            opa=args.opa,
        )
    except ValueError as err:
        print(f"bundle not built: {err}", file=sys.stderr)
        return 1
    if args.signing_key is None:
        print(f"built {out} (unsigned)")
    else:
        print(f"built {out}, signed; OPA verifies it with {public_key_path(args.signing_key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
