"""Summarise an Autobahn|Testsuite fuzzing-client report: counts by behaviour, then the misses.

Usage: python summarise.py REPORT_DIR  (the folder holding index.json)
Exits 1 when any case's behaviour is FAILED, so the runner script can be used as a gate.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def main(report_dir: str) -> int:
    index = json.loads((Path(report_dir) / "index.json").read_text())
    failed = 0
    for agent, cases in index.items():
        behaviours = Counter(result["behavior"] for result in cases.values())
        closes = Counter(result["behaviorClose"] for result in cases.values())
        print(f"{agent}: {len(cases)} cases")
        for name in ORDER + sorted(set(behaviours) - set(ORDER)):
            print(f"  {name:<14} {behaviours.get(name, 0)}")
        print("  closing behaviour: " + ", ".join(f"{k} {v}" for k, v in sorted(closes.items())))
        for case_id in sorted(cases, key=case_key):
            result = cases[case_id]
            if result["behavior"] in ("OK", "INFORMATIONAL") and result["behaviorClose"] in (
                "OK",
                "INFORMATIONAL",
            ):
                continue
            print(
                f"    {case_id:<10} {result['behavior']:<14} close {result['behaviorClose']:<14}"
                f" {result.get('reportfile', '')}"
            )
        failed += behaviours.get("FAILED", 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "reports/servers"))
