"""Dask distributed integration: make a scheduler (or any dask process) pickle with ferropickle.

Enable it without changing the user's program, as a distributed preload::

    dask scheduler --preload ferropickle.dask
    # or ~/.config/dask/distributed.yaml: {distributed: {scheduler: {preload: [ferropickle.dask]}}}
    # or DASK_DISTRIBUTED__SCHEDULER__PRELOAD=ferropickle.dask
    # workers too (optional): dask worker --preload ferropickle.dask, distributed.worker.preload

or in-process with :func:`install` / :func:`uninstall`.

Installing replaces ``distributed.protocol.pickle.dumps`` / ``loads`` (which every task message,
the ``ToPickle`` path of ``distributed.protocol.core`` and the "pickle" serialization family call
through the module attribute) and the copies that modules such as ``distributed.scheduler`` and
``distributed.client`` imported by name. The replacements are call-compatible, write standard
pickle streams (so workers with nothing installed read them) and fall back to distributed's own
function for any object ferropickle refuses, so a task never fails because of the plugin.

The preload and `install` also register the ``"ferropickle"`` serialization family, so data can
be sent with ``serializers=[..., "ferropickle", ...]``; both ends need it (a process that only
sends calls `register_family`; `check_family` tells which peers lack it).

Settings live in Dask's config under ``ferropickle`` (defaults in ``ferropickle.yaml`` next to
this module, registered with Dask's config on import; ``DASK_FERROPICKLE__...`` environment
variables work) and are read and checked when the plugin installs. While installed, every
``dumps`` is accounted per task prefix (`stats`, `report`, Prometheus) and a pickle above
``ferropickle.large-pickle-warning`` logs one warning per function naming its biggest part
(`explain`) and what send-once did about it. On a scheduler, a part of at least
``ferropickle.send-once.threshold`` shared by tasks is pickled once into the graph and sent
once per worker ("send it once", ``_send_once``).

The modules, each one job: ``_patching`` (the distributed internals replaced), ``_settings``,
``_wrappers`` (``dumps``/``loads``), ``_fallbacks``, ``_accounting`` (per task prefix),
``_explain``, ``_family``, ``_stats`` (the one snapshot of the state), ``_report``,
``_metrics`` (Prometheus), ``_plugin`` (install and the preload hooks), ``_state`` (the one
owner of what changes while the plugin runs), ``_hoist`` (send-once's rewrite of a graph) and
``_send_once`` (send-once on the scheduler).
"""

from __future__ import annotations

from ferropickle.dask._accounting import OTHER_PREFIX
from ferropickle.dask._explain import explain
from ferropickle.dask._family import FAMILY, MissingFamilyError, check_family, register_family
from ferropickle.dask._patching import VERIFIED_VERSIONS, UnsupportedLayoutWarning
from ferropickle.dask._plugin import (
    dask_setup,
    dask_teardown,
    install,
    installed,
    settings,
    uninstall,
)
from ferropickle.dask._report import Report, report
from ferropickle.dask._settings import Settings, register_defaults
from ferropickle.dask._stats import local_stats, stats
from ferropickle.dask._wrappers import dumps, loads

__all__ = [
    "FAMILY",
    "OTHER_PREFIX",
    "VERIFIED_VERSIONS",
    "MissingFamilyError",
    "Report",
    "Settings",
    "UnsupportedLayoutWarning",
    "check_family",
    "dask_setup",
    "dask_teardown",
    "dumps",
    "explain",
    "install",
    "installed",
    "loads",
    "local_stats",
    "register_family",
    "report",
    "settings",
    "stats",
    "uninstall",
]

# The public functions and classes say they live here: their reprs, tracebacks and pickles by
# reference (`stats(client)` sends `local_stats` to the scheduler) name ferropickle.dask, not
# the module that defines them.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = __name__
del _name, _obj

# Dask's convention (distributed, dask-jobqueue): a library's config defaults are registered
# when it is imported, so `dask.config.get("ferropickle....")` answers from then on. Nothing
# is validated here: `install` and the preload do that.
register_defaults()
