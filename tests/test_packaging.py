"""Every package of the project is installed: the image (Dockerfile) installs without --editable,
and a package missing from pyproject.toml's list would be missing there, though every test passed."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
