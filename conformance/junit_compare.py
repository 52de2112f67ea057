"""Compare two pytest ``--junitxml`` reports of the same suite: a baseline run and a variant run.

Prints each run's counts and the tests whose outcome differs, above all those that pass in the
baseline but fail in the variant, each with the first line of its failure message::

    python conformance/junit_compare.py stock.xml swapped.xml --labels stock swapped
    python conformance/junit_compare.py stock.xml swapped.xml --markdown report.md

Exit status: 0 if no test passes in the baseline and fails in the variant, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed")


@dataclass(frozen=True)
class Result:
    outcome: str
    message: str


def _first_line(text: str | None, limit: int = 240) -> str:
    """The message's first line; if that ends in ``:`` (``script errored with output:``), its
    last line as well, which is where a child process's exception is."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0] if len(lines[0]) <= limit else lines[0][: limit - 3] + "..."
    if first.endswith(":") and len(lines) > 1:
        first = f"{first} ... {lines[-1][:limit]}"
    return first


def read(path: Path) -> dict[str, Result]:
    """``{test id: Result}`` from a junit XML file written by pytest."""
    results: dict[str, Result] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "")
        test_id = f"{classname}::{case.get('name', '')}" if classname else case.get("name", "")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                # A teardown error after a failure is reported too: keep the first problem.
                if outcome == "passed":
                    outcome = "failed" if child.tag == "failure" else "error"
                    message = _first_line(child.get("message")) or _first_line(child.text)
            elif child.tag == "skipped" and outcome == "passed":
                xfail = child.get("type") == "pytest.xfail"
                outcome = "xfailed" if xfail else "skipped"
                message = _first_line(child.get("message"))
        results[test_id] = Result(outcome, message)
    return results


def counts(results: dict[str, Result]) -> str:
    tally = Counter(result.outcome for result in results.values())
    return ", ".join(f"{tally[outcome]} {outcome}" for outcome in OUTCOMES if tally[outcome])


def regressions(base: dict[str, Result], variant: dict[str, Result]) -> list[tuple[str, Result]]:
    """Tests that pass in ``base`` and not in ``variant`` (fail, error, skip or vanish)."""
    out = []
    for test_id, result in base.items():
        if result.outcome != "passed":
            continue
        other = variant.get(test_id, Result("missing", "not run in this variant"))
        if other.outcome != "passed":
            out.append((test_id, other))
    return out


def other_changes(base: dict[str, Result], variant: dict[str, Result]) -> list[str]:
    lines = []
    for test_id in sorted(set(base) | set(variant)):
        a = base.get(test_id, Result("missing", "")).outcome
        b = variant.get(test_id, Result("missing", "")).outcome
        if a != b and a != "passed":
            lines.append(f"{test_id}: {a} -> {b}")
    return lines


def report(
    base: dict[str, Result], variant: dict[str, Result], labels: tuple[str, str], markdown: bool
) -> str:
    lost = regressions(base, variant)
    lines = []
    if markdown:
        lines += [f"- {labels[0]}: {counts(base)}", f"- {labels[1]}: {counts(variant)}", ""]
        lines.append(f"Pass {labels[0]}, not {labels[1]} ({len(lost)}):")
        lines.append("")
        lines += [f"- `{test_id}` ({r.outcome}): {r.message}" for test_id, r in lost]
    else:
        lines += [f"{labels[0]:>10}: {counts(base)}", f"{labels[1]:>10}: {counts(variant)}"]
        lines.append(f"pass {labels[0]}, not {labels[1]}: {len(lost)}")
        lines += [f"  {test_id} [{r.outcome}]\n      {r.message}" for test_id, r in lost]
    changed = other_changes(base, variant)
    if changed:
        lines.append("")
        lines.append(f"Other outcome changes ({labels[0]} -> {labels[1]}):")
        lines += [f"{'- ' if markdown else '  '}{line}" for line in changed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("variant", type=Path)
    parser.add_argument("--labels", nargs=2, default=("baseline", "variant"))
    parser.add_argument("--markdown", type=Path, help="also write the report as Markdown here")
    args = parser.parse_args(argv)
    base, variant = read(args.baseline), read(args.variant)
    labels = (args.labels[0], args.labels[1])
    sys.stdout.write(report(base, variant, labels, markdown=False))
    if args.markdown:
        args.markdown.write_text(report(base, variant, labels, markdown=True))
    return 1 if regressions(base, variant) else 0


if __name__ == "__main__":
    sys.exit(main())
