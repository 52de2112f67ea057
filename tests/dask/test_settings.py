"""The plugin's settings: the ``ferropickle`` section of Dask's config, its YAML defaults,
environment variables, and the errors for invalid values (a real scheduler configured by
environment variables only is in ``cluster/test_configured_by_environment.py``)."""

from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
import subprocess
import sys

import dask
import pytest
from plugin_support import TIMEOUT

import ferropickle.dask as ferro_dask


def test_defaults_are_registered_with_dask_config():
    assert dask.config.get("ferropickle.enabled") is True
    assert dask.config.get("ferropickle.patch-loads") is True
    assert dask.config.get("ferropickle.large-pickle-warning") == "1 MiB"
    assert ferro_dask.Settings.from_config() == ferro_dask.Settings(
        enabled=True,
        patch_loads=True,
        large_pickle_warning=2**20,
        report_top=10,
        max_prefixes=1000,
        send_once_threshold=64 * 2**10,
    )
    # It ships in the installed package, where the defaults are read from.
    assert (pathlib.Path(ferro_dask.__file__).with_name("ferropickle.yaml")).is_file()


def test_environment_variables_set_every_option():
    """As an operator of dask-jobqueue or dask-kubernetes would: environment only."""
    env = {
        **os.environ,
        "DASK_FERROPICKLE__ENABLED": "false",
        "DASK_FERROPICKLE__PATCH_LOADS": "False",
        "DASK_FERROPICKLE__LARGE_PICKLE_WARNING": "10 MiB",
        "DASK_FERROPICKLE__REPORT__TOP": "3",
        "DASK_FERROPICKLE__REPORT__MAX_PREFIXES": "50",
        "DASK_FERROPICKLE__SEND_ONCE__THRESHOLD": "256 KiB",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import ferropickle.dask as d; print(d.settings())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "Settings(enabled=False, patch_loads=False, large_pickle_warning=10485760, "
        "report_top=3, max_prefixes=50, send_once_threshold=262144)"
    )


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("enabled", "maybe", "must be true or false (or yes/no, on/off, 1/0)"),
        ("large-pickle-warning", "lots", "must be a byte size (a number of bytes, or a number"),
        ("large-pickle-warning", "12 parsecs", "units: B, kB, MB, GB, TB, PB, KiB, MiB"),
        ("large-pickle-warning", -1, "or false for off"),
        ("report.top", 0, "must be a positive integer (1, 2, ...)"),
        ("report.max-prefixes", "many", "must be a positive integer (1, 2, ...)"),
        ("send-once.threshold", "big", "must be a byte size (a number of bytes, or a number"),
        ("send-once.threshold", -5, "or false for off"),
        ("send-once.threshold", "1e400 MB", "must be a byte size (a number of bytes, or a"),
        ("report.top", float("inf"), "must be a positive integer (1, 2, ...)"),
    ],
)
def test_each_invalid_setting_is_one_line_naming_key_value_and_what_is_accepted(
    key, value, accepted
):
    with dask.config.set({f"ferropickle.{key}": value}), pytest.raises(ValueError) as error:
        ferro_dask.install()
    assert not ferro_dask.installed()
    message = str(error.value)
    assert message.startswith(f"dask config ferropickle.{key} ")
    assert accepted in message
    assert message.endswith(f"not {value!r}")
    assert "\n" not in message
    # settings() on request reads and checks the same way.
    with dask.config.set({f"ferropickle.{key}": value}), pytest.raises(ValueError) as again:
        ferro_dask.settings()
    assert str(again.value) == message


def test_a_section_that_is_not_a_mapping_is_one_line_too():
    """``ferropickle: {report: 5}`` made dask.config.get raise a bare TypeError at install."""
    with dask.config.set({"ferropickle.report": 5}), pytest.raises(ValueError) as error:
        ferro_dask.install()
    assert not ferro_dask.installed()
    assert str(error.value).startswith("dask config ferropickle.report.top can't be read")
    assert "\n" not in str(error.value)


def test_invalid_settings_do_not_break_importing():
    """A client that only wants stats(), or a LocalCluster script, imports the package with a
    bad value in its environment; the value is refused when the plugin installs."""
    env = {**os.environ, "DASK_FERROPICKLE__LARGE_PICKLE_WARNING": "lots"}
    code = (
        "import ferropickle.dask as d\n"
        "print(d.installed())\n"
        "try:\n"
        "    d.install()\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    imported, refused = result.stdout.splitlines()
    assert imported == "False"
    assert refused.startswith("dask config ferropickle.large-pickle-warning must be a byte size")


@pytest.mark.parametrize("off", [False, "false", "off", 0, None])
def test_the_large_pickle_warning_turns_off_however_it_is_spelled(off):
    with dask.config.set({"ferropickle.large-pickle-warning": off}):
        assert ferro_dask.Settings.from_config().large_pickle_warning is None


def test_settings_are_read_at_install_not_at_each_call():
    with dask.config.set({"ferropickle.report.top": 2}):
        assert ferro_dask.install()
    assert ferro_dask.settings().report_top == 2
    with dask.config.set({"ferropickle.report.top": 7}):
        assert ferro_dask.settings().report_top == 2


def test_a_config_put_back_without_the_registered_defaults_reads_the_yaml_defaults():
    """``distributed.utils_test`` copies Dask's config when it is imported, which may be before
    ``ferropickle.dask`` registers its defaults, and puts that copy back for every cluster test:
    an unset key then means its default, as for any Dask library, and install() works."""
    saved = copy.deepcopy(dask.config.config)
    try:
        dask.config.config.pop("ferropickle", None)
        with dask.config.set({"ferropickle.report.top": 4}):
            assert ferro_dask.install()
            assert ferro_dask.settings() == dataclasses.replace(
                ferro_dask.Settings.defaults(), report_top=4
            )
    finally:
        ferro_dask.uninstall()
        dask.config.config.clear()
        dask.config.config.update(saved)
    assert dask.config.get("ferropickle.enabled") is True
