"""The lock (constraints.txt) is what is installed, and it pins every dependency pyproject.toml names."""
import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", d).group(0)).lower() for d in wanted}
    missing = names - set(_lock())
    assert not missing, f"constraints.txt lacks {sorted(missing)}: run 'make lock'"


def test_installed_versions_are_the_locked_ones():
    """'make setup' installs from the lock; a version that drifted means the venv was not made from it."""
    drifted = {}
    for name, version in _lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # platform-only packages (e.g. pywin32 entries) are not installed everywhere
        if installed.split("+")[0] != version:
            drifted[name] = (installed, version)
    assert not drifted, f"installed != locked: {drifted}; run 'make setup' (or 'make lock' to upgrade on purpose)"
