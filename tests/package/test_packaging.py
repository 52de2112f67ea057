"""What a user installs: one version everywhere, the Python versions CI tests, the license."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import ferropickle

ROOT = pathlib.Path(__file__).resolve().parents[2]


def cargo_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (ROOT / "Cargo.toml").read_text(), re.M)
    assert match, "Cargo.toml has no version"
    return match.group(1)


def test_version_is_cargo_tomls_everywhere():
    assert ferropickle.__version__ == cargo_version()
    assert importlib.metadata.version("ferropickle") == ferropickle.__version__


def test_version_flag_prints_the_version_and_the_interpreter():
    out = subprocess.run(
        [sys.executable, "-m", "ferropickle", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    python = ".".join(map(str, sys.version_info[:3]))
    assert out.strip() == f"ferropickle {ferropickle.__version__} (CPython {python})"


def versions_ci_tests() -> list[str]:
    """The interpreters `.ci/run` tests by default: on this machine, then in its Debian root."""
    run = (ROOT / ".ci" / "run").read_text()
    ci = re.search(r"CI_PYTHONS:-([0-9. ]+)\}", run)
    assert ci, ".ci/run names no default interpreters"
    # And those it tests in a Debian unstable root.
    debian = re.search(r"CI_DEBIAN_PYTHONS-([0-9. ]+)\}", run)
    assert debian, ".ci/run names no default interpreters for its Debian root"
    return ci.group(1).split() + debian.group(1).split()


def test_classifiers_name_the_versions_ci_tests():
    tested = versions_ci_tests()
    classifiers = importlib.metadata.metadata("ferropickle").get_all("Classifier") or []
    declared = [c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)]
    assert declared == tested


def test_readme_names_the_versions_ci_tests():
    tested = versions_ci_tests()
    assert f"CPython {', '.join(tested[:-1])} and {tested[-1]}" in (ROOT / "README.md").read_text()


def test_license_is_mit_and_shipped():
    meta = importlib.metadata.metadata("ferropickle")
    assert "License :: OSI Approved :: MIT License" in (meta.get_all("Classifier") or [])
    licenses = [f for f in importlib.metadata.files("ferropickle") or [] if f.name == "LICENSE"]
    assert licenses, "the installed package has no LICENSE"
    assert licenses[0].read_text().startswith("MIT License")
