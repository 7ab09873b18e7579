"""Fail unless `opa test --coverage --format json` (on stdin) reports 100% coverage.

Prints the total and every uncovered line range, so a failing `make policy-test`
says where the missing test is.
"""

from __future__ import annotations

import json
import sys

REQUIRED = 100.0


def main() -> int:
    report = json.load(sys.stdin)
    total = float(report.get("coverage", 0.0))
    for path, info in sorted(report.get("files", {}).items()):
        for span in info.get("not_covered", []):
            print(f"not covered: {path}:{span['start']['row']}-{span['end']['row']}")
    print(f"opa test coverage: {total:.2f}% (required {REQUIRED:.0f}%)")
    return 0 if total >= REQUIRED else 1


if __name__ == "__main__":
    sys.exit(main())
