"""Prints each benchmark group's times as ratios to ferropickle's at the end of the run."""

from __future__ import annotations

from collections import defaultdict


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in session.benchmarks:
        impl = bench.params.get("impl") if bench.params else None
        if impl is None or not bench.stats:
            continue
        groups[bench.group][impl] = bench.stats.min
    tr = terminalreporter
    tr.write_sep("=", "ratios to ferropickle (min time / ferropickle's min time; >1 = slower)")
    for group, times in sorted(groups.items()):
        ours = times.get("ferropickle")
        if not ours:
            continue
        cells = "  ".join(
            f"{impl} {t / ours:7.2f}x" for impl, t in sorted(times.items()) if impl != "ferropickle"
        )
        tr.write_line(f"{group:<45} ferropickle {ours * 1e6:9.2f}us  {cells}")
