"""Installing the plugin: `install` / `uninstall` in any process, and the preload hooks
(distributed.preloading calls ``dask_setup(server)`` once the server has started, and
``dask_teardown(server)`` when it closes)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import sys
import warnings
from typing import Any

import dask
import dask.config
import distributed
from packaging.version import Version

import ferropickle
from ferropickle.dask import _metrics, _patching, _send_once
from ferropickle.dask._family import register_family
from ferropickle.dask._settings import Settings, describe_size, flag
from ferropickle.dask._state import STATE
from ferropickle.dask._wrappers import dumps, loads

logger = logging.getLogger("ferropickle.dask")

#: What `install` puts in the place of distributed's functions.
_REPLACEMENTS = {"dumps": dumps, "loads": loads}


def settings() -> Settings:
    """The settings in effect: those read from Dask's config at `install` while installed,
    else Dask's config read and checked now (``ValueError`` naming a setting that is
    invalid, its value and what it accepts)."""
    return STATE.settings()


def _show_our_logs_like_distributed() -> None:
    """Makes the ``ferropickle`` logger print where distributed's does, unless anyone set up
    logging for it (or for the whole process).

    ``dask scheduler`` / ``dask worker`` give only the ``distributed`` logger a handler (at
    INFO), so our lines would otherwise be dropped below WARNING. A ``logging: {ferropickle:
    ...}`` entry in Dask's config, a handler on the root logger or a level set on ``ferropickle``
    all mean someone chose: then nothing changes.
    """
    ours = logging.getLogger("ferropickle")
    if ours.handlers or ours.level != logging.NOTSET or logging.getLogger().handlers:
        return
    handlers = logging.getLogger("distributed").handlers
    if not handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(dask.config.get("distributed.admin.log-format")))
        handlers = [handler]
    ours.setLevel(logging.INFO)
    for handler in handlers:
        ours.addHandler(handler)


def _hosted_role() -> str:
    """What this process hosts, for the log: a scheduler (a LocalCluster's, or one that ran
    `install` through ``client.run_on_scheduler``), a worker, or neither."""
    for role, server in (("scheduler", distributed.Scheduler), ("worker", distributed.Worker)):
        if any(True for _ in getattr(server, "_instances", ())):
            return role
    return "process"


def _called_from() -> str:
    """Where `install` was called from: the first frame outside this package."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "ferropickle.dask"
    ):
        frame = frame.f_back
    module = frame.f_globals.get("__name__", "?")
    if module.partition(".")[0] == "distributed":
        # distributed.worker.run: the scheduler's (or a worker's) handler of a client's run
        return "through install() run by a client (client.run_on_scheduler or client.run)"
    return f"through install() called from {module} line {frame.f_lineno}"


def _runs_the_scheduler_cli() -> bool:
    """Whether this process is ``dask scheduler`` (or ``python -m
    distributed.cli.dask_scheduler``), where a preload that refuses its settings should stop
    the scheduler rather than leave it running stock."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (
        getattr(main, "name", None) == "distributed.cli.dask_scheduler"
        or "distributed.cli.dask_scheduler" in sys.modules
    )


def _release_order(pair: tuple[str, str]) -> tuple[Version, Version]:
    return Version(pair[1]), Version(pair[0])


def _tested_pairs() -> str:
    """The tested (dask, distributed) pairs, oldest first, for a log line."""
    return ", ".join(
        dask_version
        if dask_version == distributed_version
        else f"{dask_version}+{distributed_version}"
        for dask_version, distributed_version in sorted(
            _patching.VERIFIED_VERSIONS, key=_release_order
        )
    )


#: What each native writer that this interpreter's or this dask's layout turned off is called
#: in the active line, and why it is off (`ferropickle.stats()["native_writers"]`).
_WRITERS_OFF = {
    "path": "path writer off: this Python's pathlib layout is not the one it expects",
    "partial": "partial writer off: this Python's functools.partial layout is not the one it "
    "expects",
    "dask": "dask task-node writer off: this dask's Task layout is not the one it expects",
}


def _writers_off() -> list[str]:
    """The native writers this process's layouts turned off, each with why, for the log."""
    # The task-node layouts are probed once dask's graph nodes are imported; distributed imports
    # them, and a dask without them has no task nodes to write.
    if importlib.util.find_spec("dask._task_spec") is not None:
        importlib.import_module("dask._task_spec")
    writers = ferropickle.stats()["native_writers"]
    return [why for name, why in _WRITERS_OFF.items() if not writers.get(name, True)]


def _install(role: str, how: str, *, warn: bool = True) -> bool:
    if STATE.installed:
        return True
    new_settings = Settings.from_config()
    problem = _patching.layout_problem()
    versions = f"dask {dask.__version__}, distributed {distributed.__version__}"
    if problem is not None:
        message = (
            f"ferropickle.dask is not installed: {problem} ({versions}; tested with "
            f"dask+distributed {_tested_pairs()}). Dask keeps its stock pickling."
        )
        if warn:
            warnings.warn(message, _patching.UnsupportedLayoutWarning, stacklevel=3)
        else:  # a preload: in the server's log, where its operator looks
            logger.warning(message)
        return False
    verified = (dask.__version__, distributed.__version__) in _patching.VERIFIED_VERSIONS
    if not verified:
        logger.warning(
            "ferropickle.dask: dask %s with distributed %s is not a tested combination "
            "(tested: dask+distributed %s), but its layout matches; installing.",
            dask.__version__,
            distributed.__version__,
            _tested_pairs(),
        )
    STATE.apply(new_settings)
    register_family()
    names = ["dumps", "loads"] if new_settings.patch_loads else ["dumps"]
    STATE.patches = _patching.patch({name: _REPLACEMENTS[name] for name in names})
    STATE.installed = True
    send_once = new_settings.send_once_threshold
    if send_once is not None and not _send_once.install(send_once):
        send_once = None
    STATE.collector = _metrics.register_prometheus()
    threshold = new_settings.large_pickle_warning
    logger.info(
        "ferropickle %s active in this %s (%s%s), %s: %s replaced by "
        "ferropickle's; large-pickle warning %s; send-once %s; per-task-prefix costs in "
        "ferropickle.dask.report(client)%s%s",
        ferropickle.__version__,
        role,
        versions,
        "" if verified else ", not a tested combination",
        how,
        ", ".join(f"{module.__name__}.{name}" for module, name, _ in STATE.patches),
        "off" if threshold is None else f"from {describe_size(threshold)}",
        "off" if send_once is None else f"from {describe_size(send_once)}",
        " and /metrics" if STATE.collector is not None else "",
        "".join(f"; {why}" for why in _writers_off()),
    )
    return True


def install() -> bool:
    """Make this process's pickle-family serialization use ferropickle; idempotent.

    Replaces ``distributed.protocol.pickle.dumps`` / ``loads`` and each copy of them that a
    ``distributed`` or ``dask`` module imported by name. Modules imported later pick up the
    replacement from ``distributed.protocol.pickle`` themselves. Registers the
    ``"ferropickle"`` serialization family.

    Reads the ``ferropickle`` section of Dask's config (see `Settings`): with
    ``ferropickle.patch-loads: false`` only ``dumps`` is replaced. ``ferropickle.enabled`` is
    for the preload only; calling this installs regardless.

    Returns whether ferropickle is now active. On a distributed whose layout is not the one
    verified it issues an `UnsupportedLayoutWarning`, changes nothing and returns ``False``; a
    dask and distributed pair not in `VERIFIED_VERSIONS` whose layout matches is installed
    into, with a warning in the log naming both versions.
    """
    with STATE.lock:
        _show_our_logs_like_distributed()
        active = _install(_hosted_role(), _called_from())
        STATE.explicit = STATE.explicit or active
        return active


def uninstall() -> None:
    """Put back every attribute `install` replaced, exactly; idempotent.

    Modules that imported the replacement by name after `install` get distributed's function
    back too. The "ferropickle" serialization family stays registered (it is only used when
    asked for by name, and data already sent with it must stay readable).
    """
    with STATE.lock:
        _patching.restore(STATE.patches, _REPLACEMENTS)
        STATE.patches = []
        _send_once.uninstall()
        if STATE.collector is not None:
            _metrics.unregister_prometheus(STATE.collector)
            STATE.collector = None
        was_installed = STATE.installed
        STATE.installed = STATE.explicit = False
        STATE.preload_servers.clear()
    if was_installed:
        logger.info("ferropickle.dask uninstalled; distributed's pickling is back")


def installed() -> bool:
    """Whether ferropickle is currently installed in this process."""
    return STATE.installed


def dask_setup(server: Any = None) -> None:
    """Preload entry point: installs ferropickle in the scheduler's (or worker's) process.

    Called by distributed with the ``Scheduler``, ``Worker``, ``Nanny`` or ``Client`` that
    lists ``ferropickle.dask`` as a preload; calling it with no argument is `install`. Honours
    ``ferropickle.enabled`` in Dask's config, and logs one line saying what it did (through
    distributed's log handler unless logging for ``ferropickle`` was set up otherwise). The
    ``"ferropickle"`` serialization family is registered either way: it is only used when
    asked for by name.

    Invalid settings are logged as one error line; a ``dask scheduler`` process then exits
    with status 1 (anywhere else, such as a LocalCluster in the user's process, the server
    keeps Dask's stock pickling).
    """
    with STATE.lock:
        if server is None:
            install()
            return
        register_family()
        role = type(server).__name__.lower()
        _show_our_logs_like_distributed()
        try:
            if not flag("enabled"):  # the rest of the settings is not even read
                logger.info(
                    "ferropickle.dask preload in this %s: not installed, dask config "
                    "ferropickle.enabled is false; Dask keeps its stock pickling",
                    role,
                )
                return
            active = _install(role, "through the preload", warn=False)
        except ValueError as exc:  # one line, not distributed's traceback of the preload
            logger.error("ferropickle.dask preload in this %s: not installed: %s", role, exc)
            if role == "scheduler" and _runs_the_scheduler_cli():
                # From a callback of its own, not from this preload's task: the loop stops and
                # the CLI exits with status 1 and no traceback ("Task exception was never
                # retrieved"); distributed's preload runner would log any exception.
                asyncio.get_running_loop().call_soon(sys.exit, 1)
            return
        if active:
            STATE.preload_servers.add(id(server))


def dask_teardown(server: Any = None) -> None:
    """Preload exit point: uninstalls once the last server that preloaded us has closed.

    Does nothing if `install` was also called directly, which keeps ferropickle until
    `uninstall`.
    """
    with STATE.lock:
        STATE.preload_servers.discard(id(server))
        if not STATE.preload_servers and not STATE.explicit:
            uninstall()
