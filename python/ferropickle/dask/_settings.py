"""The plugin's settings: the ``ferropickle`` section of Dask's config, with the YAML of defaults
beside this module."""

from __future__ import annotations

import functools
import pathlib
from dataclasses import dataclass
from typing import Any

import dask.config
import yaml
from dask.utils import format_bytes, parse_bytes

#: The package's defaults, registered with Dask's config when this package is imported.
DEFAULTS = pathlib.Path(__file__).with_name("ferropickle.yaml")


def register_defaults() -> None:
    """Registers the package's YAML as defaults, the way Dask libraries do (dask-jobqueue,
    dask-kubernetes): under whatever the user's files and ``DASK_FERROPICKLE__*`` variables
    say. Nothing is validated here; `Settings.from_config` does that when the plugin installs."""
    with open(DEFAULTS) as defaults:
        dask.config.update_defaults(yaml.safe_load(defaults))


@functools.cache
def _package_defaults() -> dict[str, Any]:
    with open(DEFAULTS) as defaults:
        return yaml.safe_load(defaults)


def _get(key: str, config: dict[str, Any] | None) -> Any:
    path = f"ferropickle.{key}"
    try:
        if config is None:
            try:
                return dask.config.get(path)
            except KeyError:
                # Dask's config was put back without the defaults this package registered
                # (``distributed.utils_test`` restores a copy taken before the import; a test
                # harness may clear it): the key is unset, so its default applies, as it would
                # had the defaults been registered.
                return dask.config.get(path, config=_package_defaults())
        return dask.config.get(path, config=config)
    except (KeyError, TypeError, IndexError):
        # A section that is not a mapping (``ferropickle: {report: 5}``).
        section = key.rpartition(".")[0]
        raise ValueError(
            f"dask config ferropickle.{key} can't be read: ferropickle.{section or key} must "
            "be a mapping of the keys in ferropickle.yaml"
        ) from None


_FALSE_WORDS = frozenset({"false", "no", "off", "0", "none", "null", ""})
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
#: The units dask's parse_bytes reads (case aside), for the error message.
_UNITS = "B, kB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB"


def flag(key: str, config: dict[str, Any] | None = None) -> bool:
    """A boolean setting; environment variables arrive as strings ("false", "0", "no", ...)."""
    value = _get(key, config)
    if isinstance(value, str) and value.strip().lower() in _FALSE_WORDS | _TRUE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    if isinstance(value, (bool, int)):
        return bool(value)
    raise ValueError(
        f"dask config ferropickle.{key} must be true or false (or yes/no, on/off, 1/0), "
        f"not {value!r}"
    )


def _byte_size(key: str, config: dict[str, Any] | None) -> int | None:
    """A byte size ("1 MiB", 1048576), or None when set to false / none / 0."""
    value = _get(key, config)
    if (
        value is None
        or value is False
        or (isinstance(value, str) and value.strip().lower() in _FALSE_WORDS)
    ):
        return None
    try:
        size = parse_bytes(value) if isinstance(value, str) else value
    except (ValueError, OverflowError):  # dask's message names neither key nor what it takes
        size = None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(
            f"dask config ferropickle.{key} must be a byte size (a number of bytes, or a "
            f"number and a unit such as '1 MiB' or '500 kB'; units: {_UNITS}) or false for "
            f"off, not {value!r}"
        )
    return size or None


def _count(key: str, config: dict[str, Any] | None) -> int:
    value = _get(key, config)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        number = -1
    if number < 1 or isinstance(value, bool):
        raise ValueError(
            f"dask config ferropickle.{key} must be a positive integer (1, 2, ...), not {value!r}"
        )
    return number


def describe_size(size: int) -> str:
    """A byte size setting as the log and the report show it: dask's binary units, and the
    exact number of bytes when those round it ("500 kB" is "488.28 kiB (500,000 bytes)")."""
    text = format_bytes(size)
    return text if parse_bytes(text) == size else f"{text} ({size:,} bytes)"


@dataclass(frozen=True)
class Settings:
    """The plugin's settings, as read from Dask's config (section ``ferropickle``).

    ``enabled`` (``ferropickle.enabled``): whether the preload installs. ``patch_loads``
    (``ferropickle.patch-loads``): whether ``loads`` is replaced too. ``large_pickle_warning``
    (``ferropickle.large-pickle-warning``): bytes from which one pickle logs a warning, or
    ``None`` for never. ``report_top`` (``ferropickle.report.top``): task prefixes listed by
    `stats` and `report`. ``max_prefixes`` (``ferropickle.report.max-prefixes``): task
    prefixes counted separately. ``send_once_threshold`` (``ferropickle.send-once.threshold``):
    bytes from which a part shared by tasks is pickled once and sent once per worker, or
    ``None`` for off.
    """

    enabled: bool
    patch_loads: bool
    large_pickle_warning: int | None
    report_top: int
    max_prefixes: int
    send_once_threshold: int | None

    @classmethod
    def from_config(cls, config: dict[str, Any] | None = None) -> Settings:
        """Reads ``dask.config`` now (or ``config``); raises ``ValueError`` (one line: the key,
        the value and what it accepts) for a setting that is invalid."""
        return cls(
            enabled=flag("enabled", config),
            patch_loads=flag("patch-loads", config),
            large_pickle_warning=_byte_size("large-pickle-warning", config),
            report_top=_count("report.top", config),
            max_prefixes=_count("report.max-prefixes", config),
            send_once_threshold=_byte_size("send-once.threshold", config),
        )

    @classmethod
    def defaults(cls) -> Settings:
        """The package's defaults, from ``ferropickle.yaml`` alone."""
        return cls.from_config(_package_defaults())
