"""Write an OCI image archive from a small JSON spec, without a registry or a daemon.

    python3 deploy/images/ociimage.py SPEC.json OUT.tar [--epoch SECONDS]

The archive is an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/...``) in one tar file, the format ``ctr images import`` and
``skopeo copy oci-archive:`` read. The image has one uncompressed layer.

Reproducible: the same spec and the same source files give the same bytes.
Every tar entry (layer and archive) is sorted by path, owned by uid/gid 0
unless the spec says otherwise, and stamped with one fixed mtime
(``--epoch``, else ``$SOURCE_DATE_EPOCH``, else 0); the config carries no
creation time, no host name and no build history beyond what the spec says.

A spec (keys not listed are refused, so a typo does not silently drop a file)::

    {
      "base": "other.json",                  # optional: start from that spec
      "ref": "tokensvc.local/job:0.1.0",     # the image name inside the archive
      "config": {"User": "10000:10000", "Cmd": ["/bin/sh"], ...},
      "dirs": [{"path": "/tmp", "mode": "1777"}],
      "files": [{"path": "/bin/busybox", "src": "/bin/busybox", "mode": "0755"},
                {"path": "/etc/passwd", "text": "...", "mode": "0644"}],
      "symlinks": [{"path": "/bin/sh", "target": "busybox"}],
      "trees": [{"path": "/", "src": "@rootfs", "exclude": ["usr/share/doc"]}]
    }

With a base, ``config`` keys replace the base's one by one and entries of
``dirs``/``files``/``symlinks`` replace the base's entry for the same path.
A tree copies a directory's files, directories and symlinks (modes kept,
owners made root, mtimes dropped) below ``path``, skipping the relative
paths in ``exclude`` and everything below them; the other kinds of entry
win over a tree's entry for the same path.
``src`` is resolved against the spec's directory when relative; ``@name``
names a file given on the command line (``--src name=PATH``), for build
output whose path carries a version the spec should not repeat. Parent
directories are added (mode 0755, root) when the spec does not list them.
Standard library only, so it runs before the project venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
# containerd names an imported image after this annotation; the OCI one is
# kept for other readers of the layout.
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_OCI_REF = "org.opencontainers.image.ref.name"

SPEC_KEYS = {"base", "ref", "config", "dirs", "files", "symlinks", "trees"}
CONFIG_KEYS = {"User", "Entrypoint", "Cmd", "Env", "WorkingDir", "Labels", "StopSignal"}
ENTRY_KEYS = {
    "dirs": {"path", "mode", "uid", "gid"},
    "files": {"path", "src", "text", "mode", "uid", "gid"},
    "symlinks": {"path", "target"},
    "trees": {"path", "src", "exclude"},
}
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


class SpecError(ValueError):
    """The spec is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Entry:
    kind: str  # "dir" | "file" | "symlink"
    path: str  # absolute, normalised
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""


@dataclass(frozen=True)
class Image:
    ref: str
    config: dict[str, Any]
    entries: dict[str, Entry]


def _norm(path: str, where: str) -> str:
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts or str(p) == "/":
        raise SpecError(f"{where}: path {path!r} must be absolute, below /, without '..'")
    return str(p)


def _source(src: str, spec_dir: Path, sources: dict[str, Path], where: str) -> bytes:
    if src.startswith("@"):
        if src[1:] not in sources:
            raise SpecError(f"{where}: {src} needs --src {src[1:]}=PATH")
        return sources[src[1:]].read_bytes()
    return (spec_dir / src).read_bytes()


def _entry(
    kind: str, raw: dict[str, Any], spec_dir: Path, sources: dict[str, Path], where: str
) -> Entry:
    unknown = set(raw) - ENTRY_KEYS[kind]
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
    path = _norm(raw["path"], where)
    if kind == "symlinks":
        return Entry("symlink", path, mode=0o777, target=str(raw["target"]))
    mode = int(str(raw.get("mode", "0755")), 8)
    uid, gid = int(raw.get("uid", 0)), int(raw.get("gid", 0))
    if kind == "dirs":
        return Entry("dir", path, mode, uid, gid)
    if ("src" in raw) == ("text" in raw):
        raise SpecError(f"{where}: a file needs exactly one of 'src' and 'text'")
    if "src" in raw:
        data = _source(str(raw["src"]), spec_dir, sources, where)
    else:
        data = str(raw["text"]).encode()
    return Entry("file", path, mode, uid, gid, data)


def _tree(raw: dict[str, Any], spec_dir: Path, sources: dict[str, Path], where: str) -> list[Entry]:
    unknown = set(raw) - ENTRY_KEYS["trees"]
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
    src = str(raw["src"])
    top = sources.get(src[1:]) if src.startswith("@") else spec_dir / src
    if top is None or not top.is_dir():
        raise SpecError(f"{where}: tree source {src} is not a directory")
    dest = PurePosixPath(raw["path"])
    excluded = [PurePosixPath(e) for e in raw.get("exclude", [])]
    out = []
    for here, dirs, files in os.walk(top):
        for name in sorted(dirs) + sorted(files):
            full = Path(here) / name
            rel = PurePosixPath(full.relative_to(top).as_posix())
            if any(rel == e or e in rel.parents for e in excluded):
                continue
            path = str(dest / rel)
            st = full.lstat()
            if full.is_symlink():
                out.append(Entry("symlink", path, mode=0o777, target=os.readlink(full)))
            elif full.is_dir():
                out.append(Entry("dir", path, st.st_mode & 0o7777))
            elif full.is_file():
                out.append(Entry("file", path, st.st_mode & 0o7777, data=full.read_bytes()))
            else:
                raise SpecError(f"{where}: {full} is neither file, directory nor symlink")
    return out


def load_spec(path: Path, sources: dict[str, Path] | None = None) -> Image:
    """The image a spec describes, its base (if any) applied first."""
    sources = sources or {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SpecError(f"{path}: {err}") from err
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown keys {sorted(unknown)}")
    if "base" in raw:
        base = load_spec(path.parent / raw["base"], sources)
        config, entries = dict(base.config), dict(base.entries)
        ref = raw.get("ref", base.ref)
    else:
        config, entries = {}, {}
        ref = raw.get("ref", "")
    if not ref:
        raise SpecError(f"{path}: 'ref' is required")
    bad_config = set(raw.get("config", {})) - CONFIG_KEYS
    if bad_config:
        raise SpecError(f"{path}: unknown config keys {sorted(bad_config)}")
    config.update(raw.get("config", {}))
    for i, item in enumerate(raw.get("trees", [])):
        for e in _tree(item, path.parent, sources, f"{path}: trees[{i}]"):
            entries[e.path] = e
    for kind in ("dirs", "files", "symlinks"):
        for i, item in enumerate(raw.get(kind, [])):
            e = _entry(kind, item, path.parent, sources, f"{path}: {kind}[{i}]")
            entries[e.path] = e
    return Image(ref, config, entries)


def _with_parents(entries: dict[str, Entry]) -> list[Entry]:
    out = dict(entries)
    for path in entries:
        for parent in PurePosixPath(path).parents:
            if str(parent) != "/" and str(parent) not in out:
                out[str(parent)] = Entry("dir", str(parent))
    for e in out.values():
        for parent in PurePosixPath(e.path).parents:
            if str(parent) != "/" and out[str(parent)].kind != "dir":
                raise SpecError(f"{e.path}: parent {parent} is not a directory")
    return [out[p] for p in sorted(out)]


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    # PAX: exact sizes and ids without GNU extensions; no per-entry timestamps
    # beyond mtime (tarfile writes none unless asked).
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = epoch
    info.uname = info.gname = ""
    return info


def layer_tar(image: Image, epoch: int) -> bytes:
    """The root filesystem as one tar, entries sorted by path."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for e in _with_parents(image.entries):
        info = _info(e.path.lstrip("/"), epoch)
        info.mode, info.uid, info.gid = e.mode, e.uid, e.gid
        if e.kind == "dir":
            info.type = tarfile.DIRTYPE
            members.append((info, None))
        elif e.kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, e.target
            members.append((info, None))
        else:
            info.size = len(e.data)
            members.append((info, e.data))
    return _tar(members)


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def archive(image: Image, epoch: int, arch: str) -> bytes:
    """The OCI image layout of `image` as one tar file's bytes."""
    layer = layer_tar(image, epoch)
    config = _json(
        {
            "architecture": arch,
            "os": "linux",
            "config": image.config,
            "rootfs": {"type": "layers", "diff_ids": [_descriptor(MEDIA_LAYER, layer)["digest"]]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": _descriptor(MEDIA_CONFIG, config),
            "layers": [_descriptor(MEDIA_LAYER, layer)],
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "manifests": [
                _descriptor(MEDIA_MANIFEST, manifest)
                | {
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {
                        ANNOTATION_CONTAINERD_NAME: image.ref,
                        ANNOTATION_OCI_REF: image.ref.rpartition(":")[2],
                    },
                }
            ],
        }
    )
    blobs = {hashlib.sha256(b).hexdigest(): b for b in (layer, config, manifest)}
    files: dict[str, bytes | None] = {
        "blobs": None,
        "blobs/sha256": None,
        "index.json": index,
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
    } | {f"blobs/sha256/{h}": b for h, b in blobs.items()}
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for name in sorted(files):
        info, data = _info(name, epoch), files[name]
        if data is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
        else:
            info.mode, info.size = 0o644, len(data)
        members.append((info, data))
    return _tar(members)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epoch", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    parser.add_argument("--arch", default=GO_ARCH.get(platform.machine(), platform.machine()))
    parser.add_argument(
        "--src",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="the file a spec's '@NAME' source stands for",
    )
    args = parser.parse_args(argv)
    sources = {}
    for item in args.src:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--src {item!r}: expected NAME=PATH")
        sources[name] = Path(path)
    try:
        data = archive(load_spec(args.spec, sources), args.epoch, args.arch)
    except (SpecError, OSError) as err:
        print(f"ociimage: {err}", file=sys.stderr)
        return 2
    # Written beside the target and renamed: a half-written archive never
    # carries the final name (make would take it as up to date).
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
