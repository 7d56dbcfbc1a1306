"""Per-module score of the last `mutmut run` (make mutation): mutants, killed, survivors, and
each survivor's name, from mutmut's result files under mutants/. Survivors that are equivalent
or accepted are listed with a reason in docs/testing.md; this prints any that are not.

    python scripts/mutation_report.py [--markdown]
"""

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILLED = {1, 3, 36, 24, -24, 152, 255}  # a failing test, pytest's internal error, a timeout
SURVIVED = {0}
NO_TESTS = {5, 33}


def module_results(module: str) -> dict[str, int | None]:
    """Mutant name -> mutmut's exit code (None: not run yet) for one source file."""
    meta = ROOT / "mutants" / f"{module}.meta"
    if not meta.is_file():
        return {}
    return json.loads(meta.read_text())["exit_code_by_key"]


def documented_survivors() -> set[str]:
    """Mutant names docs/testing.md explains (its survivor tables' first column)."""
    doc = ROOT / "docs" / "testing.md"
    text = doc.read_text() if doc.is_file() else ""
    return set(re.findall(r"^\| `([\w.ǁ]+__mutmut_\d+)`", text, flags=re.M))


def main() -> int:
    markdown = "--markdown" in sys.argv
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    explained = documented_survivors()
    rows, survivors = [], []
    for module in config["only_mutate"]:
        results = module_results(module)
        codes = list(results.values())
        killed = sum(c in KILLED for c in codes)
        survived = [name for name, c in results.items() if c in SURVIVED]
        untested = [name for name, c in results.items() if c in NO_TESTS]
        other = len(codes) - killed - len(survived) - len(untested)
        score = killed / len(codes) if codes else float("nan")
        rows.append((module, len(codes), killed, len(survived), len(untested), other, score))
        survivors += [(module, name, "survived") for name in sorted(survived)]
        survivors += [(module, name, "no test") for name in sorted(untested)]
    header = ("module", "mutants", "killed", "survived", "no test", "other", "score")
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print(f"| `{row[0]}` | " + " | ".join(str(v) for v in row[1:6]) + f" | {row[6]:.1%} |")
    else:
        print(f"{header[0]:<36}" + "".join(f"{h:>10}" for h in header[1:]))
        for row in rows:
            print(f"{row[0]:<36}" + "".join(f"{v:>10}" for v in row[1:6]) + f"{row[6]:>10.1%}")
    unexplained = [s for s in survivors if s[1] not in explained]
    if unexplained:
        print(f"\n{len(unexplained)} survivors not explained in docs/testing.md "
              "(see each with: .venv/bin/mutmut show NAME):")  # fmt: skip
        for _, name, why in unexplained:
            print(f"  {why:<9} {name}")
    low = [row[0] for row in rows if not row[6] >= 0.9]
    if low:
        print(f"\nunder 90 % killed: {', '.join(low)}")
    return 1 if low or unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
