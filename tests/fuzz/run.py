"""Run one fuzz target under atheris (libFuzzer): ``python tests/fuzz/run.py TARGET [ARGS]``.

ARGS are libFuzzer's (``-max_total_time=60``, ``-runs=100000``, a corpus
directory: new inputs that reach new code are written into the first one).
``make fuzz`` runs every target with the corpus kept in tests/fuzz/corpus/.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tokensvc"]):
    from targets import TARGETS  # type: ignore[import-not-found]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        raise SystemExit(f"usage: run.py {{{','.join(TARGETS)}}} [libFuzzer args]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
