"""`report`: the table of what the scheduler spent pickling, per task prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes

from ferropickle.dask._accounting import Reply, total
from ferropickle.dask._settings import describe_size
from ferropickle.dask._stats import (
    check_sort,
    on_scheduler,
    snapshot,
    top_prefixes,
    top_sent_once,
)

if TYPE_CHECKING:
    from distributed import Client


class Report(str):
    """The text of `report`; shown as the table itself (not a quoted string) at a prompt."""

    def __repr__(self) -> str:
        return str(self)


def report_rows(top: int | None, sort: str) -> Reply:
    """Runs where the counters are (the scheduler): the rows and totals `report` prints."""
    now = snapshot()
    tasks = total(now.prefixes)
    return Reply(
        installed=now.installed,
        prefixes=len(now.prefixes),
        dumps=tasks.dumps,
        bytes=tasks.nbytes,
        seconds=tasks.ns / 1e9,
        top=top_prefixes(now.prefixes, now.settings.report_top if top is None else top, sort),
        messages=top_prefixes(now.messages, None, sort),
        client_here=now.client_here,
        large_pickle_warning=now.settings.large_pickle_warning,
        send_once=now.send_once,
        sent_once=top_sent_once(now.sent_once, now.settings.report_top if top is None else top),
    )


def _table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    def us(seconds: float) -> str:
        return f"{seconds * 1e6:,.1f} us"

    columns = (title, "dumps", "bytes", "bytes/dumps", "largest", "time", "time/dumps")
    table = [
        (
            name,
            f"{row['dumps']:,}",
            format_bytes(row["bytes"]),
            format_bytes(row["bytes"] // max(row["dumps"], 1)),
            format_bytes(row["largest"]),
            f"{row['seconds'] * 1e3:,.1f} ms",
            us(row["seconds"] / max(row["dumps"], 1)),
        )
        for name, row in rows.items()
    ]
    width = max(len(columns[0]), *(len(row[0]) for row in table))
    return [
        f"{row[0]:<{width}}" + "".join(f" {c:>12}" for c in row[1:]) for row in [columns, *table]
    ]


def _sent_once_table(rows: dict[str, dict[str, int]]) -> list[str]:
    columns = ("task prefix", "tasks", "parts", "not sent/task", "sent once")
    table = [
        (
            name,
            f"{row['tasks']:,}",
            f"{row['parts']:,}",
            format_bytes(row["bytes_not_sent_per_task"]),
            format_bytes(row["bytes_sent_once"]),
        )
        for name, row in rows.items()
    ]
    width = max(len(columns[0]), *(len(row[0]) for row in table))
    return [
        f"{row[0]:<{width}}" + "".join(f" {c:>13}" for c in row[1:]) for row in [columns, *table]
    ]


def _format_report(data: dict[str, Any], sort: str, where: str) -> Report:
    lines = [
        f"ferropickle in {where}: {'installed' if data['installed'] else 'NOT installed'}; "
        f"{data['dumps']:,} dumps, {data['bytes']:,} bytes ({format_bytes(data['bytes'])}), "
        f"{data['seconds'] * 1e3:,.1f} ms in {data['prefixes']:,} task prefixes"
    ]
    top, messages, sent_once = data["top"], data["messages"], data["sent_once"]
    if not top and not messages and not sent_once:
        return Report(lines[0] + "\n(nothing pickled yet)")
    if top:
        lines += [
            f"top {len(top)} by {sort}"
            + (
                f"; pickles from {describe_size(data['large_pickle_warning'])} are explained in "
                "the log"
                if data["large_pickle_warning"] is not None
                else ""
            ),
            "",
            *_table("task prefix", top),
        ]
    if messages:
        lines += [
            "",
            "messages that are not tasks, apart from the task prefixes above"
            + (
                " (a Client lives in this process too: its graphs and calls are among them)"
                if data["client_here"]
                else ""
            ),
            "",
            *_table("message", messages),
        ]
    if sent_once:
        lines += [
            "",
            "send-once (from "
            + ("off now" if data["send_once"] is None else describe_size(data["send_once"]))
            + "): parts shared by tasks, pickled once and sent once per worker; 'not sent/task' "
            "is what the tasks' own messages no longer carry, 'sent once' what was sent instead "
            "(under the task prefix send-once above)",
            "",
            *_sent_once_table(sent_once),
        ]
    return Report("\n".join(lines))


def report(client: Client | None = None, *, top: int | None = None, sort: str = "bytes") -> Any:
    """A table of what the scheduler spent pickling, per task prefix (the key's name part).

    For each of the ``top`` (default ``ferropickle.report.top``) prefixes that cost the most
    by ``sort`` (``"bytes"``, ``"time"``, ``"calls"`` or ``"largest"``): how many messages
    ferropickle wrote, their bytes (out-of-band buffers included), the largest single one and
    the time spent. Messages that are not tasks (graph nodes) are listed apart, under their
    type in parentheses; the plugin's own stats/report replies are not counted. The header's
    totals are the task messages' (what `stats` gives as ``task_messages``). A last table
    shows what send-once did per task prefix (`stats`' ``send_once``). With no client,
    this process's counters. Returns a `Report` (a ``str``); with
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
