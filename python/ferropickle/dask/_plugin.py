"""Installing the plugin: `install` / `uninstall` in any process, and the preload hooks
(distributed.preloading calls ``dask_setup(server)`` once the server has started, and
``dask_teardown(server)`` when it closes)."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import dask.config
import distributed
from dask.utils import format_bytes

import ferropickle
from ferropickle.dask import _metrics, _patching
from ferropickle.dask._family import register_family
from ferropickle.dask._settings import Settings, flag
from ferropickle.dask._state import STATE
from ferropickle.dask._wrappers import dumps, loads

logger = logging.getLogger("ferropickle.dask")

#: What `install` puts in the place of distributed's functions.
_REPLACEMENTS = {"dumps": dumps, "loads": loads}


def settings() -> Settings:
    """The settings in effect: those read from Dask's config at the last `install`, or, before
    any, Dask's config read now (``ValueError`` naming a setting that is invalid)."""
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


def _install(role: str = "process", *, warn: bool = True) -> bool:
    if STATE.installed:
        return True
    new_settings = Settings.from_config()
    problem = _patching.layout_problem()
    versions = ", ".join(sorted(_patching.VERIFIED_VERSIONS))
    if problem is not None:
        message = (
            f"ferropickle.dask is not installed: {problem} (distributed "
            f"{distributed.__version__}; verified with {versions}). Dask keeps its stock pickling."
        )
        if warn:
            warnings.warn(message, _patching.UnsupportedLayoutWarning, stacklevel=3)
        else:  # a preload: in the server's log, where its operator looks
            logger.warning(message)
        return False
    verified = distributed.__version__ in _patching.VERIFIED_VERSIONS
    if not verified:
        logger.warning(
            "ferropickle.dask: distributed %s was not verified (verified: %s), but its layout "
            "matches; installing.",
            distributed.__version__,
            versions,
        )
    STATE.apply(new_settings)
    register_family()
    names = ["dumps", "loads"] if new_settings.patch_loads else ["dumps"]
    STATE.patches = _patching.patch({name: _REPLACEMENTS[name] for name in names})
    STATE.installed = True
    STATE.collector = _metrics.register_prometheus()
    threshold = new_settings.large_pickle_warning
    logger.info(
        "ferropickle %s active in this %s (distributed %s%s): %s replaced by ferropickle's; "
        "large-pickle warning %s; per-task-prefix costs in ferropickle.dask.report(client)%s",
        ferropickle.__version__,
        role,
        distributed.__version__,
        "" if verified else ", not verified",
        ", ".join(f"{module.__name__}.{name}" for module, name, _ in STATE.patches),
        "off" if threshold is None else f"from {format_bytes(threshold)}",
        " and /metrics" if STATE.collector is not None else "",
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

    Returns whether ferropickle is now active. On a distributed whose layout was not verified
    it issues an `UnsupportedLayoutWarning`, changes nothing and returns ``False``.
    """
    with STATE.lock:
        active = _install()
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
    """
    with STATE.lock:
        if server is None:
            install()
            return
        register_family()
        role = type(server).__name__.lower()
        _show_our_logs_like_distributed()
        if not flag("enabled"):
            logger.info(
                "ferropickle.dask preload in this %s: not installed, dask config "
                "ferropickle.enabled is false; Dask keeps its stock pickling",
                role,
            )
        elif _install(role, warn=False):
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
