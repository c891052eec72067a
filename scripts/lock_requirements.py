"""Write ``deploy/requirements.lock``: the image's exact versions, read off the running venv.

    .venv/bin/python scripts/lock_requirements.py

The lock holds every distribution ``guidance-server`` needs at run time (its dependencies and
theirs, extras such as ``uvicorn[standard]`` included, markers evaluated for this interpreter:
run it with the image's Python minor version and platform, CPython 3.11 on Linux) and the
``[build-system]`` requirements, since the Dockerfile installs the project without build
isolation. The versions are the ones installed in this venv: to move the image to newer
versions, upgrade the venv (``pip install -U -e '.[test]' setuptools wheel``), run the tests,
then run this script and commit the lock with the upgrade.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["LOCK", "closure", "main", "render"]

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "deploy" / "requirements.lock"
PROJECT = "guidance-server"

HEADER = """\
# The image's exact versions (the Dockerfile installs these, then the project with --no-deps).
# Generated from a tested venv by scripts/lock_requirements.py: do not edit; see that script to refresh.
"""


def _wanted(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Every installed distribution the ``roots`` need, transitively: canonical name -> version.

    Raises:
        SystemExit: a needed distribution is not installed, or its version does not satisfy a
            requirement on it.
    """
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(r, set(r.extras)) for r in roots]
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{requirement} is needed but not installed in this venv") from None
        version = dist.version
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            raise SystemExit(f"{requirement} is needed but this venv has {name} {version}")
        found[name] = version
        key = (name, frozenset(extras))
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            sub = Requirement(text)
            if _wanted(sub, extras):
                pending.append((sub, set(sub.extras)))
    return found


def render() -> str:
    """The lock file's text for this venv."""
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = closure([Requirement(PROJECT)] + [Requirement(r) for r in build])
    pins.pop(canonicalize_name(PROJECT))
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def main() -> int:
    """Write the lock file."""
    LOCK.write_text(render())
    print(f"wrote {LOCK.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
