"""A short coverage-guided run of every fuzz target (``make fuzz`` runs them longer).

Each run starts from the kept corpus (tests/fuzz/corpus/TARGET, read only
here) and must end without a finding: no unexpected exception, no hang, no
acceptance its oracle refutes (tests/fuzz/targets.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from targets import TARGETS, seeds  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent
SHORT_RUNS = 30_000
# Inputs per short run where one input costs more (the HTTP app: a request
# through the service and the stand-in OPA): about ten seconds each.
SHORT_RUNS_OF = {"http_request": 5_000}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_pass_their_oracle(name: str) -> None:
    for data in seeds()[name]:
        TARGETS[name](data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_fuzz_run_finds_nothing(name: str, tmp_path: Path) -> None:
    runs = SHORT_RUNS_OF.get(name, SHORT_RUNS)
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / "run.py"),
            name,
            str(tmp_path),  # new inputs go here, not into the kept corpus
            str(HERE / "corpus" / name),
            f"-runs={runs}",
            "-timeout=5",  # seconds for one input: longer is a hang
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Done {runs} runs" in run.stderr
