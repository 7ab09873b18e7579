"""Paths of the Go-built tools (OPA, conftest, Regal) for the tests.

A missing tool is installed with make at its pinned version, never skipped
over: a test that cannot find its tool would pass without testing anything.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"


def tool(name: str) -> str:
    """Absolute path of ``.tools/bin/<name>``, running ``make`` to install it if missing."""
    path = TOOLS_BIN / name
    if not path.exists():
        subprocess.run(["make", "-s", "-C", str(ROOT), str(path)], check=True)
    return str(path)
