"""The import rule between the layers, held by reading the code and by running it.

core imports the standard library and cryptography only; usernode imports
core; cluster imports core (never usernode); cli imports the others only
inside the handler that needs them. Starting ``tokensvc token`` or
``tokensvc mintd`` loads no Kubernetes client, HTTP server, HTTP client or
OPA client module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tokensvc"
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__", "_typeshed"}

# layer -> what its modules may import (top-level names, or tokensvc sub-packages).
ALLOWED = {
    "core": {"cryptography", "tokensvc.core"},
    "usernode": {"cryptography", "tokensvc.core", "tokensvc.usernode"},
    "cluster": {"*third-party*", "tokensvc.core", "tokensvc.cluster"},
}
# Modules the user-node commands must never load (the server's stack).
SERVER_SIDE = (
    "kubernetes",
    "uvicorn",
    "starlette",
    "aiohttp",
    "httpx",
    "httptools",
    "requests",
    "yaml",
    "prometheus_client",
    "tokensvc.cluster",
)


def _imports(path: Path, *, top_level_only: bool) -> list[str]:
    """Every module an ``import``/``from … import`` in ``path`` names (absolute)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.If) and top_level_only:
            continue  # `if TYPE_CHECKING:` blocks only name types
    return names


def _layer_of(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "tokensvc" else parts[0]


def _allowed(layer: str, name: str) -> bool:
    target = _layer_of(name)
    if target in STDLIB:
        return True
    allowed = ALLOWED[layer]
    if target.startswith("tokensvc"):
        return target in allowed
    return "*third-party*" in allowed or target in allowed


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(layer: str) -> None:
    wrong = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted((PACKAGE / layer).glob("*.py"))
        for name in _imports(path, top_level_only=False)
        if not _allowed(layer, name)
    ]
    assert wrong == []


def test_cli_modules_import_only_core_at_module_level() -> None:
    wrong = [
        f"{path.name} imports {name} at module level"
        for path in sorted((PACKAGE / "cli").glob("*.py"))
        for name in _imports(path, top_level_only=True)
        if _layer_of(name) not in STDLIB
        and _layer_of(name) not in {"tokensvc.core", "tokensvc.cli"}
    ]
    assert wrong == []


def _loaded_after(args: list[str], tmp_path: Path) -> set[str]:
    """Run ``tokensvc ARGS`` in a fresh interpreter; the modules it had loaded at exit."""
    script = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
        "from tokensvc.cli import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    env = {"TOKENSVC_CONFIG": str(tmp_path / "none.conf"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    import json  # noqa: PLC0415

    return set(json.loads(run.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "args",
    [
        ["token", "--socket", "/nonexistent/mint.sock", "--timeout", "0.5"],
        ["mintd", "--socket", "/nonexistent/mint.sock", "--keyring", "/nonexistent/keyring"],
    ],
    ids=["token", "mintd"],
)
def test_user_node_commands_load_nothing_of_the_server_side(
    args: list[str], tmp_path: Path
) -> None:
    (tmp_path / "none.conf").write_text("")
    loaded = _loaded_after(args, tmp_path)
    assert "tokensvc.usernode.client" in loaded or "tokensvc.usernode.daemon" in loaded
    assert (
        sorted(m for m in loaded if m.split(".")[0] in SERVER_SIDE or m.startswith(SERVER_SIDE))
        == []
    )
