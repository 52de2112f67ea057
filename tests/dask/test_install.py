"""Installing ``ferropickle.dask`` in this process: what `install` patches and `uninstall`
restores, the layout check, the preload hooks, and what importing the package does not do."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import types

import dask
import pytest
from plugin_support import BY_NAME, STOCK, TIMEOUT, assert_stock, dcore, dpickle

import ferropickle.dask as ferro_dask
from ferropickle.dask import _patching
from ferropickle.dask._state import STATE

pytestmark = pytest.mark.usefixtures("never_left_installed")


def test_install_replaces_the_module_attribute_and_every_by_name_copy(installed):
    assert dpickle.dumps is ferro_dask.dumps
    assert dpickle.loads is ferro_dask.loads
    for module, name in BY_NAME:
        assert getattr(module, name) is getattr(ferro_dask, name), f"{module.__name__}.{name}"
    # The ToPickle path of task messages and the "pickle" family look it up on the module.
    assert dcore.pickle is dpickle
    assert importlib.import_module("distributed.protocol.serialize").pickle is dpickle


def test_uninstall_restores_every_attribute_exactly():
    assert ferro_dask.install()
    ferro_dask.uninstall()
    assert_stock()


def test_install_twice_is_idempotent():
    assert ferro_dask.install() is True
    patched = list(STATE.patches)
    assert ferro_dask.install() is True
    assert STATE.patches == patched
    ferro_dask.uninstall()
    assert_stock()
    ferro_dask.uninstall()  # and so is uninstall
    assert_stock()


def test_module_importing_by_name_while_installed_is_restored_too():
    name = "distributed._ferropickle_test_late_import"
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        assert ferro_dask.install()
        exec("from distributed.protocol.pickle import dumps, loads", module.__dict__)
        assert module.dumps is ferro_dask.dumps
        ferro_dask.uninstall()
        assert module.dumps is STOCK["dumps"]
        assert module.loads is STOCK["loads"]
    finally:
        del sys.modules[name]


def test_patch_loads_false_replaces_dumps_only():
    stock_loads = dpickle.loads
    with dask.config.set({"ferropickle.patch-loads": False}):
        assert ferro_dask.install()
    assert dpickle.dumps is ferro_dask.dumps
    assert dpickle.loads is stock_loads
    assert importlib.import_module("distributed.scheduler").loads is stock_loads
    ferro_dask.uninstall()
    assert dpickle.loads is stock_loads


def test_unrecognised_layout_warns_and_keeps_stock_behaviour(monkeypatch):
    def dumps(x, protocol=None):  # what a future distributed might look like
        raise AssertionError("never called")

    dumps.__module__ = "distributed.protocol.pickle"
    monkeypatch.setattr(_patching, "STOCK_DUMPS", dumps)
    with pytest.warns(ferro_dask.UnsupportedLayoutWarning, match="signature"):
        assert ferro_dask.install() is False
    assert not ferro_dask.installed()
    assert dpickle.dumps is STOCK["dumps"]


def test_preload_hooks_install_and_the_last_teardown_uninstalls():
    scheduler, worker = object(), object()  # any server object; only its identity is kept
    ferro_dask.dask_setup(scheduler)
    ferro_dask.dask_setup(worker)
    assert dpickle.dumps is ferro_dask.dumps
    ferro_dask.dask_teardown(scheduler)
    assert ferro_dask.installed()
    ferro_dask.dask_teardown(worker)
    assert_stock()


def test_explicit_install_outlives_preload_teardown():
    server = object()
    ferro_dask.dask_setup(server)
    assert ferro_dask.install()
    ferro_dask.dask_teardown(server)
    assert ferro_dask.installed()
    ferro_dask.uninstall()


def test_enabled_false_makes_the_preload_a_no_op_but_not_install(caplog):
    server = object()
    with (
        dask.config.set({"ferropickle.enabled": False}),
        caplog.at_level(logging.INFO, logger="ferropickle.dask"),
    ):
        ferro_dask.dask_setup(server)
        assert not ferro_dask.installed()
        assert any("ferropickle.enabled is false" in r.getMessage() for r in caplog.records)
        assert ferro_dask.install()  # explicit: the user asked for it
    ferro_dask.dask_teardown(server)
    ferro_dask.uninstall()


#: Run in a fresh interpreter: what importing the package changes, and what installing adds.
IMPORT_ONLY = """
import importlib
import dask
import ferropickle.dask as d
families = importlib.import_module("distributed.protocol.serialize").families
print("ferropickle" in families, dask.config.get("ferropickle.enabled"))
d.install()
print("ferropickle" in families, d.installed())
"""


def test_importing_registers_defaults_only_and_install_registers_the_family():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ONLY], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True", "True"]


def test_install_logs_the_active_line_with_where_it_was_called_from(caplog):
    with caplog.at_level(logging.INFO, logger="ferropickle.dask"):
        assert ferro_dask.install()
    ferro_dask.uninstall()
    [active] = [r.getMessage() for r in caplog.records if " active in this " in r.getMessage()]
    assert f"through install() called from {__name__} line " in active
    assert "; large-pickle warning from 1.00 MiB; send-once from 64.00 kiB; " in active


def test_a_preload_with_invalid_settings_logs_one_line_and_keeps_stock(caplog):
    """In-process servers (a LocalCluster in the user's script) keep running stock."""
    server = object()
    with (
        dask.config.set({"ferropickle.report.top": "many"}),
        caplog.at_level(logging.INFO, logger="ferropickle.dask"),
    ):
        ferro_dask.dask_setup(server)
    assert not ferro_dask.installed()
    [line] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.getMessage() == (
        "ferropickle.dask preload in this object: not installed: dask config "
        "ferropickle.report.top must be a positive integer (1, 2, ...), not 'many'"
    )
    ferro_dask.dask_teardown(server)


def test_enabled_false_skips_checking_the_other_settings(caplog):
    server = object()
    with (
        dask.config.set(
            {"ferropickle.enabled": "false", "ferropickle.large-pickle-warning": "lots"}
        ),
        caplog.at_level(logging.INFO, logger="ferropickle.dask"),
    ):
        ferro_dask.dask_setup(server)
    assert not ferro_dask.installed()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    ferro_dask.dask_teardown(server)
