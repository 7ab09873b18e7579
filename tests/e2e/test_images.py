"""The image archives `make images` writes: reproducible, well-formed, non-root,
and the same image the Containerfile describes for sites with a registry."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from support.toolpaths import tool

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "deploy" / "images"
WRITER = SPECS / "ociimage.py"
BUSYBOX = Path("/bin/busybox")

pytestmark = pytest.mark.skipif(
    not BUSYBOX.exists(), reason="needs Debian's busybox-static (make node-debs)"
)


def _sources(spec: str) -> list[str]:
    """The --src arguments a spec needs, building what is missing with make."""
    if spec == "opa.json":
        return ["--src", f"opa={tool('opa-static')}"]
    if spec == "server.json":
        rootfs = REPO / "build" / "server-rootfs"
        subprocess.run(["make", "-s", "-C", str(REPO), str(rootfs / ".built")], check=True)
        return ["--src", f"rootfs={rootfs / 'root'}"]
    return []


def _build(spec: str, out: Path, epoch: int = 0) -> bytes:
    sources = _sources(spec)
    subprocess.run(
        [sys.executable, str(WRITER), "--epoch", str(epoch), *sources, str(SPECS / spec), str(out)],
        check=True,
    )
    return out.read_bytes()


def _open(archive: bytes) -> tuple[dict[str, Any], dict[str, Any], tarfile.TarFile]:
    """(index entry, config, layer) of a one-image OCI archive; digests checked."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as outer:
        files = {m.name: outer.extractfile(m).read() for m in outer if m.isfile()}  # type: ignore[union-attr]
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(files["index.json"])["manifests"]
    manifest = json.loads(files["blobs/" + entry["digest"].replace(":", "/")])
    config = json.loads(files["blobs/" + manifest["config"]["digest"].replace(":", "/")])
    (layer_desc,) = manifest["layers"]
    layer_bytes = files["blobs/" + layer_desc["digest"].replace(":", "/")]
    assert config["rootfs"]["diff_ids"] == [layer_desc["digest"]]
    return entry, config, tarfile.open(fileobj=io.BytesIO(layer_bytes))


def test_archives_are_reproducible(tmp_path: Path) -> None:
    for spec in ("job.json", "job-extra-group.json", "pause.json", "opa.json", "server.json"):
        first = _build(spec, tmp_path / "a.tar")
        assert _build(spec, tmp_path / "b.tar") == first, spec
    # The epoch is the only clock in it.
    assert _build("job.json", tmp_path / "c.tar", epoch=1) != _build("job.json", tmp_path / "d.tar")


def test_layer_is_sorted_root_owned_with_one_mtime(tmp_path: Path) -> None:
    entry, config, layer = _open(_build("job.json", tmp_path / "job.tar"))
    members = layer.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {m.mtime for m in members} == {0}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert entry["annotations"]["io.containerd.image.name"] == "tokensvc.local/job:0.1.0"
    assert "created" not in config and "history" not in config


@pytest.mark.parametrize(
    "spec", ["job.json", "job-extra-group.json", "pause.json", "opa.json", "server.json"]
)
def test_images_run_as_non_root(tmp_path: Path, spec: str) -> None:
    _, config, _ = _open(_build(spec, tmp_path / "img.tar"))
    uid, _, gid = config["config"]["User"].partition(":")
    assert int(uid) > 0 and int(gid) > 0


def test_extra_group_variant_differs_only_in_etc_group(tmp_path: Path) -> None:
    _, base_config, base = _open(_build("job.json", tmp_path / "job.tar"))
    _, config, variant = _open(_build("job-extra-group.json", tmp_path / "extra.tar"))
    assert config["config"] == base_config["config"]
    assert [m.name for m in variant] == [m.name for m in base]
    differ = [
        m.name
        for m, b in zip(variant.getmembers(), base.getmembers(), strict=True)
        if m.isfile() and variant.extractfile(m).read() != base.extractfile(b).read()  # type: ignore[union-attr]
    ]
    assert differ == ["etc/group"]
    group = variant.extractfile("etc/group").read().decode()  # type: ignore[union-attr]
    assert "imagegroup:x:4242:job" in group.splitlines()


# --- the Containerfile describes the same image ------------------------------------


def _stages(containerfile: Path) -> list[list[tuple[str, str]]]:
    """Each stage's instructions (op, argument), continuation lines joined."""
    text = re.sub(r"\\\n", " ", containerfile.read_text())
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, arg = line.partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        stages[-1].append((op.upper(), arg.strip()))
    return stages


def _final_stage(containerfile: Path) -> tuple[list[tuple[str, str]], str]:
    """(instructions of the last stage, the RUN text of the stage before it)."""
    stages = _stages(containerfile)
    return stages[-1], " ".join(arg for op, arg in stages[-2] if op == "RUN")


def test_containerfile_describes_the_job_image(tmp_path: Path) -> None:
    _, config, layer = _open(_build("job.json", tmp_path / "job.tar"))
    final, build_run = _final_stage(SPECS / "job.Containerfile")
    ops = dict(final)
    assert ops["FROM"] == "scratch"
    cfg = config["config"]
    assert ops["USER"] == cfg["User"]
    assert ops["WORKDIR"] == cfg["WorkingDir"]
    assert [ops["ENV"]] == cfg["Env"]
    assert json.loads(ops["CMD"]) == cfg["Cmd"]
    assert "ENTRYPOINT" not in ops and "Entrypoint" not in cfg
    # Same busybox links, same /etc files.
    applets = re.search(r"for applet in ([^;]+);", build_run)
    assert applets is not None
    links = sorted(m.name[len("bin/") :] for m in layer if m.issym())
    assert sorted(shlex.split(applets.group(1))) == links
    copied = [arg for op, arg in _final_stage(SPECS / "job.Containerfile")[0] if op == "COPY"]
    assert copied == ["--from=rootfs /rootfs/ /"]
    spec_text = (SPECS / "job.Containerfile").read_text()
    for name in ("passwd", "group"):
        assert f"job/{name}" in spec_text
        inside = layer.extractfile(f"etc/{name}").read()  # type: ignore[union-attr]
        assert inside == (SPECS / "job" / name).read_bytes()
    assert {m.name for m in layer if m.isfile()} == {"bin/busybox", "etc/group", "etc/passwd"}
    tmp = layer.getmember("tmp")
    assert tmp.isdir() and tmp.mode == 0o1777 and "chmod 1777 /rootfs/tmp" in build_run


def test_opa_image_is_the_pinned_static_opa(tmp_path: Path) -> None:
    entry, config, layer = _open(_build("opa.json", tmp_path / "opa.tar"))
    pinned = re.search(r"^OPA_VERSION\s*:=\s*v(\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert pinned is not None
    assert entry["annotations"]["io.containerd.image.name"] == f"tokensvc.local/opa:{pinned[1]}"
    assert config["config"]["Entrypoint"] == ["/opa"]
    # The Deployment's OPA container runs as 65532 (deploy/k8s/server.yaml).
    assert config["config"]["User"] == "65532:65532"
    assert [m.name for m in layer] == ["opa"]
    binary = layer.extractfile("opa").read()  # type: ignore[union-attr]
    assert binary == Path(tool("opa-static")).read_bytes()
    assert b"/lib64/ld-linux" not in binary[:4096]  # static: no interpreter to find


def test_server_image_has_no_shell_or_package_manager(tmp_path: Path) -> None:
    _, config, layer = _open(_build("server.json", tmp_path / "server.tar"))
    names = {m.name for m in layer}
    assert "usr/bin/python3.11" in names
    assert "usr/local/lib/python3.11/dist-packages/tokensvc/__init__.py" in names
    for absent in ("bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/dpkg", "usr/bin/apt-get"):
        assert absent not in names
    assert not [n for n in names if n.startswith("usr/share/doc/")]
    assert not [n for n in names if n.endswith("direct_url.json")]
    # Nothing that names the machine it was built on: pip's RECORDs list
    # neither the deleted scripts nor the deleted direct_url.json.
    for m in layer:
        if m.name.endswith(".dist-info/RECORD"):
            record = layer.extractfile(m).read().decode()  # type: ignore[union-attr]
            assert "../../bin/" not in record and "direct_url.json" not in record, m.name
    # The Deployment runs `tokensvc server` as 65532 (deploy/k8s/server.yaml).
    assert config["config"]["Cmd"] == ["tokensvc", "server"]
    assert config["config"]["User"] == "65532:65532"


def _final_config(containerfile: Path) -> dict[str, Any]:
    """The image config the last stage of a Containerfile sets, in OCI terms."""
    final, _ = _final_stage(containerfile)
    ops = dict(final)
    config: dict[str, Any] = {"User": ops["USER"], "WorkingDir": ops["WORKDIR"]}
    if "ENV" in ops:
        config["Env"] = ops["ENV"].split()
    for op, key in (("ENTRYPOINT", "Entrypoint"), ("CMD", "Cmd")):
        if op in ops:
            config[key] = json.loads(ops[op])
    return config


def _spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((SPECS / name).read_text())
    return spec


def test_containerfile_describes_the_server_image() -> None:
    containerfile = SPECS / "server.Containerfile"
    spec = _spec("server.json")
    assert _final_config(containerfile) == spec["config"]
    text = re.sub(r"\\\n", " ", containerfile.read_text())
    # The same Debian packages as mk/images.mk unpacks.
    mk = re.sub(r"\\\n", " ", (REPO / "mk" / "images.mk").read_text())
    debs = re.search(r"^SERVER_DEBS\s*:=\s*(.+)$", mk, re.M)
    downloaded = re.search(r"apt-get download ([^&]+)&&", text)
    assert debs is not None and downloaded is not None
    assert downloaded[1].split() == debs[1].split()
    # The same paths left out of the root.
    removed = re.search(r"rm -rf (/rootfs/usr/share/doc[^&]+)&&", text)
    assert removed is not None
    (tree,) = spec["trees"]
    assert [p.removeprefix("/rootfs/") for p in removed[1].split()] == tree["exclude"]
    # The same files from deploy/images/server, in the same places: each
    # COPY names its sources and then a destination file or directory.
    copies = [arg.split() for op, arg in _stages(containerfile)[-2] if op == "COPY"]
    for item in spec["files"]:
        src, dest = f"deploy/images/{item['src']}", f"/rootfs{item['path']}"
        assert any(
            src in c[:-1] and (c[-1] == dest or c[-1] == dest.rpartition("/")[0] + "/")
            for c in copies
        ), item


def test_containerfile_describes_the_opa_image() -> None:
    containerfile = SPECS / "opa.Containerfile"
    assert _final_config(containerfile) == _spec("opa.json")["config"]
    final, _ = _final_stage(containerfile)
    assert ("COPY", "--from=build /out/opa /opa") in final
    pinned = re.search(r"^OPA_VERSION\s*:=\s*(\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert pinned is not None
    assert f"ARG OPA_VERSION={pinned[1]}" in containerfile.read_text()
    assert "CGO_ENABLED=0" in containerfile.read_text()
