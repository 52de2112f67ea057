"""`report`: the table of what the scheduler spent pickling, per task prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes

from ferropickle.dask._stats import check_sort, on_scheduler, snapshot, top_prefixes

if TYPE_CHECKING:
    from distributed import Client


class Report(str):
    """The text of `report`; shown as the table itself (not a quoted string) at a prompt."""

    def __repr__(self) -> str:
        return str(self)


def report_rows(top: int | None, sort: str) -> dict[str, Any]:
    """Runs where the counters are (the scheduler): the rows and totals `report` prints."""
    now = snapshot()
    rows = [row for _, row in now.prefixes]
    return {
        "installed": now.installed,
        "prefixes": len(rows),
        "dumps": sum(row.dumps for row in rows),
        "bytes": sum(row.nbytes for row in rows),
        "seconds": sum(row.ns for row in rows) / 1e9,
        "top": top_prefixes(now.prefixes, now.settings.report_top if top is None else top, sort),
        "large_pickle_warning": now.settings.large_pickle_warning,
    }


def _format_report(data: dict[str, Any], sort: str, where: str) -> Report:
    def us(seconds: float) -> str:
        return f"{seconds * 1e6:,.1f} us"

    header = (
        f"ferropickle in {where}: {'installed' if data['installed'] else 'NOT installed'}; "
        f"{data['dumps']:,} dumps, {format_bytes(data['bytes'])}, "
        f"{data['seconds'] * 1e3:,.1f} ms in {data['prefixes']:,} task prefixes"
    )
    top = data["top"]
    if not top:
        return Report(header + "\n(nothing pickled yet)")
    columns = ("task prefix", "dumps", "bytes", "bytes/dumps", "largest", "time", "time/dumps")
    table = [
        (
            prefix,
            f"{row['dumps']:,}",
            format_bytes(row["bytes"]),
            format_bytes(row["bytes"] // max(row["dumps"], 1)),
            format_bytes(row["largest"]),
            f"{row['seconds'] * 1e3:,.1f} ms",
            us(row["seconds"] / max(row["dumps"], 1)),
        )
        for prefix, row in top.items()
    ]
    width = max(len(columns[0]), *(len(row[0]) for row in table))
    lines = [
        header,
        f"top {len(top)} by {sort}"
        + (
            f"; pickles from {format_bytes(data['large_pickle_warning'])} are explained in the log"
            if data["large_pickle_warning"] is not None
            else ""
        ),
        "",
        f"{columns[0]:<{width}}" + "".join(f" {c:>12}" for c in columns[1:]),
    ]
    lines += [f"{row[0]:<{width}}" + "".join(f" {c:>12}" for c in row[1:]) for row in table]
    return Report("\n".join(lines))


def report(client: Client | None = None, *, top: int | None = None, sort: str = "bytes") -> Any:
    """A table of what the scheduler spent pickling, per task prefix (the key's name part).

    For each of the ``top`` (default ``ferropickle.report.top``) prefixes that cost the most
    by ``sort`` (``"bytes"``, ``"time"``, ``"calls"`` or ``"largest"``): how many messages
    ferropickle wrote, their bytes (out-of-band buffers included), the largest single one and
    the time spent. Messages that are not graph nodes are listed under their type in
    parentheses. With no client, this process's counters. Returns a `Report` (a ``str``); with
    an asynchronous client, an awaitable of it.
    """
    check_sort(sort)
    if top is not None and top < 1:
        raise ValueError(f"top must be at least 1, not {top}")
    if client is None:
        return _format_report(report_rows(top, sort), sort, "this process")
    where = f"the scheduler at {client.scheduler.address}"
    rows = on_scheduler(client, report_rows, top, sort)
    if getattr(client, "asynchronous", False):

        async def formatted() -> Report:
            return _format_report(await rows, sort, where)

        return formatted()
    return _format_report(rows, sort, where)
