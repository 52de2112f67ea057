"""Installing ``ferropickle.dask`` in this process: what `install` patches and `uninstall`
restores, the layout check, the preload hooks, and what importing the package does not do."""

from __future__ import annotations

import importlib
import logging
import pathlib
import subprocess
import sys
import types

import dask
import distributed
import pytest
from plugin_support import BY_NAME, STOCK, TIMEOUT, assert_stock, dcore, dpickle

import ferropickle
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
    with pytest.warns(ferro_dask.UnsupportedLayoutWarning, match="signature") as caught:
        assert ferro_dask.install() is False
    assert f"dask {dask.__version__}, distributed {distributed.__version__}" in str(
        caught[0].message
    )
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


def _versions() -> tuple[str, str]:
    return dask.__version__, distributed.__version__


def test_a_tested_dask_and_distributed_pair_installs_without_a_warning(caplog):
    if _versions() not in ferro_dask.VERIFIED_VERSIONS:
        pytest.skip(
            f"dask {dask.__version__} with distributed {distributed.__version__}: not a tested pair"
        )
    with caplog.at_level(logging.INFO, logger="ferropickle.dask"):
        assert ferro_dask.install()
    ferro_dask.uninstall()
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warned if "not a tested combination" in m], warned
    [active] = [r.getMessage() for r in caplog.records if " active in this " in r.getMessage()]
    assert f"(dask {dask.__version__}, distributed {distributed.__version__})," in active


def test_an_untested_pair_warns_naming_both_versions_and_installs(monkeypatch, caplog):
    # What `pip install -U dask` leaves next to an older distributed.
    monkeypatch.setattr(dask, "__version__", "2099.1.0")
    with caplog.at_level(logging.INFO, logger="ferropickle.dask"):
        assert ferro_dask.install()
    ferro_dask.uninstall()
    [warning] = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "not a tested combination" in r.getMessage()
    ]
    assert f"dask 2099.1.0 with distributed {distributed.__version__} is not a tested" in warning
    assert "its layout matches; installing" in warning
    [active] = [r.getMessage() for r in caplog.records if " active in this " in r.getMessage()]
    assert f"(dask 2099.1.0, distributed {distributed.__version__}, not a tested" in active


@pytest.mark.parametrize(
    ("writer", "named"),
    [
        ("path", "path writer off"),
        ("partial", "partial writer off"),
        ("dask", "dask task-node writer off"),
    ],
)
def test_the_active_line_names_each_native_writer_that_is_off(caplog, writer, named):
    with caplog.at_level(logging.INFO, logger="ferropickle.dask"):
        assert ferro_dask.install()
    ferro_dask.uninstall()
    [active] = [r.getMessage() for r in caplog.records if " active in this " in r.getMessage()]
    on = ferropickle.stats()["native_writers"][writer]
    assert (named in active) is (not on), active


def test_the_extras_are_bounded_to_the_tested_pairs():
    tomllib = pytest.importorskip(
        "tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib"
    )
    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = pathlib.Path(__file__).parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    pairs = sorted(ferro_dask.VERIFIED_VERSIONS, key=lambda p: (Version(p[1]), Version(p[0])))
    assert all(d == x for d, x in pairs), "dask[distributed]==X pins distributed to X"
    oldest, newest = pairs[0][0], pairs[-1][0]

    def dask_requirement(extra: str) -> Requirement:
        [req] = [Requirement(r) for r in extras[extra] if Requirement(r).name == "dask"]
        return req

    for extra in ("dask", "demo"):
        assert str(dask_requirement(extra).specifier) == f"<={newest},>={oldest}", extra
    # The README's test command tests the newest pair, whatever the index holds.
    assert str(dask_requirement("test").specifier) == f"=={newest}"
