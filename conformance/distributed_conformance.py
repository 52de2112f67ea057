"""pytest plugin: run a distributed checkout's protocol tests against the *installed* distributed,
optionally with ``ferropickle.dask.install()`` applied around every test.

Used by ``run-distributed-pickle-tests`` (see there and ``README.md``); by hand::

    PYTHONPATH=conformance python -m pytest -p distributed_conformance \\
        --distributed-checkout=/path/to/distributed [--ferropickle-dask] \\
        -c <config from `python conformance/distributed_conformance.py config CHECKOUT`> \\
        --rootdir=/path/to/distributed --confcutdir=/path/to/distributed \\
        /path/to/distributed/distributed/protocol/tests/test_pickle.py

How the checkout's tests meet the installed package: this plugin imports the installed
``distributed`` before pytest loads the checkout's ``conftest.py`` (which would otherwise put
the checkout first on ``sys.path``), then appends the checkout's ``distributed/protocol`` to
``distributed.protocol.__path__``. So ``distributed.protocol.tests.test_pickle`` is the
checkout's test module under its upstream name, while every other ``distributed`` module comes
from site-packages (the installed package ships no ``tests``). Keeping the upstream module name
matters: ``ferropickle.dask.install()`` patches the ``dumps``/``loads`` that ``distributed.*``
modules imported by name, and ``test_pickle`` imports them that way.

With ``--ferropickle-dask`` an autouse fixture calls ``install()`` before each test (failing
the test if it returns ``False``) and ``uninstall()`` after it, and the terminal summary lists
the tests during which ferropickle refused an object and distributed's own function wrote it
(``ferropickle.dask`` falls back silently, so such a test passing says nothing about
ferropickle).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_fallbacks: dict[str, dict[str, dict[str, int]]] = {}
_installs = {"ok": 0, "refused": 0}


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("ferropickle conformance")
    group.addoption(
        "--distributed-checkout",
        help="distributed source checkout whose distributed/protocol/tests are run",
    )
    group.addoption(
        "--ferropickle-dask",
        action="store_true",
        help="apply ferropickle.dask.install() around every test",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: Any, parser: Any, args: list[str]) -> None:
    # Runs before conftest.py files are imported: bind `distributed` to the installed package.
    import distributed
    import distributed.protocol

    checkout = early_config.known_args_namespace.distributed_checkout
    if not checkout:
        raise pytest.UsageError("--distributed-checkout is required")
    installed = Path(distributed.__file__).resolve().parent
    checkout_pkg = (Path(checkout) / "distributed").resolve()
    if installed == checkout_pkg:
        raise pytest.UsageError(
            f"distributed was imported from the checkout ({installed}), not the installed package"
        )
    protocol_dir = str(checkout_pkg / "protocol")
    if protocol_dir not in distributed.protocol.__path__:
        distributed.protocol.__path__.append(protocol_dir)


def pytest_report_header(config: Any) -> list[str]:
    import distributed

    import ferropickle

    mode = "ferropickle.dask installed around each test" if _enabled(config) else "stock"
    return [
        f"installed distributed {distributed.__version__} from {distributed.__file__}",
        f"ferropickle from {ferropickle.__file__}; pickling: {mode}",
    ]


def _enabled(config: Any) -> bool:
    return bool(config.getoption("--ferropickle-dask"))


def _fallback_counts() -> dict[str, dict[str, int]]:
    import ferropickle.dask

    stats = ferropickle.dask.local_stats()
    return {"dumps": dict(stats["dumps_fallbacks"]), "loads": dict(stats["loads_fallbacks"])}


@pytest.fixture(autouse=True)
def _ferropickle_dask(request: Any) -> Iterator[None]:
    if not _enabled(request.config):
        yield
        return
    import ferropickle.dask

    before = _fallback_counts()
    if not ferropickle.dask.install():
        _installs["refused"] += 1
        pytest.fail("ferropickle.dask.install() returned False (layout not supported)")
    _installs["ok"] += 1
    try:
        yield
    finally:
        ferropickle.dask.uninstall()
        after = _fallback_counts()
        new = {
            direction: {
                key: count - before[direction].get(key, 0)
                for key, count in after[direction].items()
                if count != before[direction].get(key, 0)
            }
            for direction in after
        }
        if any(new.values()):
            _fallbacks[request.node.nodeid] = new


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not _enabled(config):
        return
    write = terminalreporter.write_line
    terminalreporter.section("ferropickle.dask")
    write(f"installed around {_installs['ok']} tests ({_installs['refused']} refused)")
    write(f"tests during which ferropickle fell back to distributed's pickle: {len(_fallbacks)}")
    for nodeid, counts in sorted(_fallbacks.items()):
        write(f"  {nodeid}: {json.dumps(counts, sort_keys=True)}")


# Outside pytest: write the pytest configuration --------------------------------------------

#: Keys of distributed's pytest configuration that need plugins which may not be installed.
_PLUGIN_KEYS = {"timeout": "pytest_timeout", "timeout_method": "pytest_timeout"}


def _toml_value(value: Any) -> str:
    # JSON strings, numbers, booleans and lists of them are valid TOML values.
    return json.dumps(value)


def config(checkout: Path) -> str:
    """distributed's own ``[tool.pytest.ini_options]``, minus keys for absent plugins."""
    import importlib.util

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    options = tomllib.loads((checkout / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"
    ]
    lines = [
        "# Written by ferropickle's conformance/distributed_conformance.py from",
        f"# {checkout / 'pyproject.toml'}.",
        "[tool.pytest.ini_options]",
    ]
    for key, value in options.items():
        plugin = _PLUGIN_KEYS.get(key)
        if plugin and importlib.util.find_spec(plugin) is None:
            lines.append(f"# {key} dropped: {plugin} is not installed")
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "config":
        print("usage: distributed_conformance.py config DISTRIBUTED_CHECKOUT", file=sys.stderr)
        return 2
    sys.stdout.write(config(Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
