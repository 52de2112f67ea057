"""The one owner of everything the plugin changes while a process runs: `STATE`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ferropickle.dask._accounting import Accounting
from ferropickle.dask._fallbacks import Fallbacks
from ferropickle.dask._hoist import Seen, verdict
from ferropickle.dask._patching import Patch
from ferropickle.dask._settings import Settings


@dataclass(eq=False)
class State:
    """The plugin's mutable state in this process.

    The wrappers write the accounting and the fallbacks (send-once's rewrite of a graph adds
    its counts there too, and updates ``seen``); install, uninstall and the preload
    hooks change the rest under ``lock``; stats, the report and the metrics only read.
    """

    lock: Any = field(default_factory=threading.RLock)  # an RLock: install may nest in setup
    #: The settings read at the last install.
    applied: Settings | None = None
    accounting: Accounting = field(default_factory=Accounting)
    fallbacks: Fallbacks = field(default_factory=Fallbacks)
    installed: bool = False
    #: Whether `install()` was called directly (as opposed to only through preloads).
    explicit: bool = False
    #: The servers whose preload installed us; the last one's teardown uninstalls.
    preload_servers: set[int] = field(default_factory=set)
    #: Every attribute `install` replaced, with what it held before.
    patches: list[Patch] = field(default_factory=list)
    #: The Prometheus collector registered while installed, if prometheus_client is there.
    collector: Any = None
    #: The send-once threshold in effect while send-once rewrites graphs, else None.
    send_once: int | None = None
    #: What send-once saw in recent graphs, to recognise the same content in a later one.
    seen: Seen = field(default_factory=Seen)
    #: Every attribute send-once replaced (a module's or a class's), with what it held before.
    send_once_patches: list[tuple[Any, str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.accounting.send_once_verdict = self.send_once_verdict

    def send_once_verdict(self, x: Any) -> str:
        """What send-once did about the large pickle of ``x``, as the warning says it."""
        return verdict(x, self.send_once, self.seen)

    def apply(self, settings: Settings) -> None:
        """Makes ``settings`` the ones in effect (at install)."""
        self.applied = settings
        self.accounting.configure(settings.large_pickle_warning, settings.max_prefixes)

    def settings(self) -> Settings:
        """The settings in effect: those applied at install while installed, else Dask's
        config read and checked now."""
        if self.installed and self.applied is not None:
            return self.applied
        return Settings.from_config()


STATE = State()
