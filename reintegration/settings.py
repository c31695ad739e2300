"""One settings class for the API, the worker and the command line.

Every value comes from the environment (prefix ``REINTEGRATION_``, except ``DATABASE_URL``) or
its default; the defaults are the embedded development setup under ``./data``.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from temporalio.envconfig import ClientConfigProfile

from reintegration import affinity
from reintegration.crypto import is_development_kek_file
from reintegration.vault import is_vault_name as vault_name
from workflows.model import JourneyConfig

DEVELOPMENT_AGENCIES: list[dict[str, Any]] = [
    # Seeded into the agency registry on a development start when it is empty.
    {
        "agency_id": "shelter-es",
        "name": "Shelter (development)",
        "org_type": "NGO",
        "country": "ES",
        "services": ["shelter", "police-protection", "housing", "psychosocial"],
    },
    {
        "agency_id": "clinic-es",
        "name": "Clinic (development)",
        "org_type": "HealthServiceOrganisation",
        "country": "ES",
        "services": ["medical", "psychosocial", "shelter", "job-orientation", "financial", "education"],
    },
    {
        "agency_id": "legal-aid-es",
        "name": "Legal aid (development)",
        "org_type": "LegalService",
        "country": "ES",
        "services": ["legal-assistance", "legal"],
    },
    {
        "agency_id": "consulate-ro",
        "name": "Consulate of Romania in Spain (development)",
        "org_type": "CentralGovernmentOrganisation",
        "country": "ES",
        "services": ["travel-documents"],
    },
    {
        "agency_id": "origin-office-ro",
        "name": "Office in the country of origin (development)",
        "org_type": "NGO",
        "country": "RO",
        "services": ["origin-assessment", "family-assessment", "reception"],
    },
    {
        "agency_id": "reintegration-partner-ro",
        "name": "Reintegration partner (development)",
        "org_type": "NGO",
        "country": "RO",
        "services": [
            "medical",
            "psychosocial",
            "legal",
            "job-orientation",
            "education",
            "housing",
            "financial",
            "family",
            "security-follow-up",
        ],
    },
]

DEVELOPMENT_DEFAULT_AGENCIES = {
    "shelter": "shelter-es",
    "medical": "clinic-es",
    "police-protection": "shelter-es",
    "origin-assessment": "origin-office-ro",
    "travel-documents": "consulate-ro",
    "family-assessment": "origin-office-ro",
    "reception": "origin-office-ro",
    "legal-assistance": "legal-aid-es",
}

DEVELOPMENT_PARTNER_FIELDS = {
    "reception": ["first_name", "second_name", "travel_date"],
    "medical": ["first_name", "second_name", "birthdate", "primary_language"],
    "psychosocial": ["first_name", "primary_language"],
    "shelter": ["first_name", "gender", "primary_language"],
    "police-protection": ["first_name", "second_name"],
    "travel-documents": ["first_name", "second_name", "birthdate", "citizenship", "identity_number"],
    "origin-assessment": ["first_name", "second_name"],
    "family-assessment": ["first_name", "second_name"],
    "legal-assistance": ["first_name", "second_name", "birthdate", "citizenship"],
    "legal": ["first_name", "second_name", "citizenship"],
    "job-orientation": ["first_name", "primary_language"],
    "education": ["first_name", "birthdate", "primary_language"],
    "housing": ["first_name", "second_name"],
    "financial": ["first_name", "second_name", "identity_number"],
    "family": ["first_name"],
    "security-follow-up": ["first_name", "mobile_phone"],
}


# What an OIDC provider may sign tokens with: asymmetric only, so holding the JWKS signs nothing.
OIDC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})

PLACEHOLDER_SECRETS = frozenset(
    {"", "change-me", "changeme", "change_me", "secret", "development", "password", "test", "example", "default"}
)
MIN_SECRET_LENGTH = 32


def _holds_a_secret(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except OSError:
        return False


def is_placeholder_secret(value: str) -> bool:
    """A secret nobody should run production with: a well-known placeholder, or too short to resist guessing."""
    return value.strip().lower() in PLACEHOLDER_SECRETS or len(value) < MIN_SECRET_LENGTH


class Settings(BaseSettings):
    """Everything configurable, read once per process."""

    model_config = SettingsConfigDict(env_prefix="REINTEGRATION_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "REINTEGRATION_DATABASE_URL")
    )
    # The database's password in a file (a Compose or Kubernetes secret), so that DATABASE_URL can
    # name the user and host alone: no credential in the environment or the deployment's files.
    database_password_file: Path | None = None

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "reintegration"
    temporal_task_queue: str = "case-journeys"
    temporal_ui_port: int = 8233
    temporal_connect_wait_seconds: float = 30.0  # the API starts serving after this even without Temporal
    # The journeys' workflow code runs outside Temporal's sandbox by default: the sandbox re-imports
    # modules for every workflow it starts and runs code inside itself for every payload, a fifth of
    # the worker's CPU (make bench). Its checks still hold the code to determinism where it matters:
    # the tests replay every stored history, and the tests' histories, in the sandbox. True turns
    # the sandbox on in the worker too (slower, the same behaviour).
    workflow_sandbox: bool = False
    # Who can reach Temporal's frontend can read every history (encrypted) and send commands: in
    # production it must take only authenticated clients, with mTLS (a client certificate) or an
    # API key (Temporal Cloud). Files, never values: they are secrets.
    temporal_tls: bool = False  # TLS to the frontend (implied by a client certificate or a CA file)
    temporal_tls_ca_file: Path | None = None
    temporal_tls_cert_file: Path | None = None
    temporal_tls_key_file: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key_file: Path | None = None
    # Production refuses a frontend reached without either, unless this says the network itself
    # admits no one else (e.g. a private network of the deployment's own): say so knowingly.
    temporal_allow_unauthenticated: bool = False
    # Or Temporal's own client configuration file (TOML, as the temporal CLI and every SDK read it:
    # temporalio.envconfig): a profile's address, namespace, TLS files and API key replace the
    # settings above. The way to Temporal Cloud that its documentation gives.
    temporal_config_file: Path | None = None
    temporal_profile: str = "default"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed; none by
    # default, so the address a rate limit charges is the connection's own.
    trusted_proxies: list[str] = Field(default_factory=list)

    # Metrics in Prometheus' format (reintegration/metrics.py): the API's /metrics, and the worker's
    # on its own port when one is set (None: no server). A file holding a bearer token (32+
    # characters): /metrics then answers only `Authorization: Bearer <token>`. Without one,
    # development serves it to anyone and production not at all (404): nothing is exposed by default.
    metrics_token_file: Path | None = None
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    jwt_signing_key_file: Path | None = None

    # The key-encryption key that wraps every case's data key: a key file (64 hex digits). On the
    # embedded default one marked "DEVELOPMENT ONLY" is made under data/; production refuses it.
    kek_file: Path | None = None
    key_cache_seconds: float = 60.0  # how long a process keeps an unwrapped data key at hand
    # Where the key-encryption key lives: "file" (kek_file) or "vault", a derived key of HashiCorp
    # Vault's transit engine (reintegration/vault.py; its token from a file, a value in development
    # only). While `reintegration keys rotate` re-wraps every data key under a new KEK, the key files
    # it replaces are listed here: they unwrap, never wrap (README: "Rotating the key-encryption key").
    kek_provider: Literal["file", "vault"] = "file"
    kek_previous_files: list[Path] = Field(default_factory=list)
    vault_address: str | None = None
    vault_token_file: Path | None = None
    vault_token: SecretStr | None = None  # development only (a dev server's root token)
    vault_transit_mount: str = "transit"
    vault_transit_key: str | None = None
    vault_ca_file: Path | None = None
    vault_timeout_seconds: float = Field(default=10.0, gt=0)
    # The audit trail's head, anchored outside the database (reintegration/anchor.py): every
    # audit_anchor_seconds (0: never) the worker appends it, when it moved, to the anchor file
    # (default data/audit-anchors) and POSTs it to the webhook, signed with the secret in the file;
    # `reintegration audit verify` checks the chain against the file's newest anchor.
    audit_anchor_file: Path | None = None
    audit_anchor_seconds: float = Field(default=300.0, ge=0)
    audit_anchor_webhook_url: str | None = None
    audit_anchor_webhook_secret_file: Path | None = None
    # How long a process trusts a bearer token it has verified before checking its signature again
    # (never past the token's own expiry; 0: every request checks).
    verified_token_seconds: float = Field(default=60.0, ge=0, le=300)
    # The Temporal Web UI's origins: the only ones allowed to call the payload codec endpoints.
    temporal_ui_origins: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8233", "http://localhost:8233"])
    jwt_issuer: str = "reintegration-dev"
    jwt_audience: str = "reintegration-api"
    # Tokens for the development Web UI's payload codec: their own audience, good for /codec/t/...
    # only, and only while the stack that minted them runs (its random session id, passed to the API
    # in the environment by `reintegration run`; unset, no codec token is valid).
    codec_audience: str = "reintegration-codec"
    codec_session: str | None = None
    codec_ui_countries: list[str] = Field(
        default_factory=lambda: ["*"], description="The development Web UI's codec scope, like a supervisor's"
    )
    token_ttl_hours: int = 12
    # The web workspace's sessions: ended after this long without a request, and at the latest this
    # long after sign-in, whatever the person does.
    web_session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    web_session_hours: int = Field(default=12, ge=1, le=7 * 24)

    # Production authentication: bearer tokens from the organisation's OpenID Connect provider,
    # verified against its JWKS. When oidc_issuer is set, development tokens are no longer accepted.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    oidc_role_claim: str = "role"  # the claim names the provider uses for api.md's claims
    oidc_agency_claim: str = "agency"
    oidc_countries_claim: str = "countries"
    oidc_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    # An unknown key id fetches the JWKS again at most this often: forged kids cannot hammer the provider.
    oidc_jwks_refresh_cooldown_seconds: float = Field(default=30.0, ge=0)
    oidc_leeway_seconds: int = Field(default=30, ge=0, le=300)

    # The web workspace (/workspace): people sign in with the provider above, as this OpenID Connect
    # client (authorization code with PKCE; api/web/oidc.py). Production refuses the workspace
    # without one. The client's secret is read from a file, never given as a value.
    workspace: bool = True
    oidc_client_id: str | None = Field(default=None, max_length=200)
    oidc_client_secret_file: Path | None = None
    oidc_scopes: list[str] = Field(default_factory=lambda: ["openid", "profile"])
    # The workspace's address as browsers reach it (the redirect URI is under it); https in production.
    public_url: str = "http://127.0.0.1:8000"

    # Hostile input. 1 MiB holds the largest valid body (a 20-measure safety plan with every note
    # at 2,000 characters) however its characters are encoded; bodies grow no bigger than that.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # API processes serving one `reintegration api` (uvicorn's workers), and how many such APIs
    # (containers, machines) serve the same users. Rate limits live in each process's memory: each
    # holds its share of every caller's budget, so that together they never grant more than it.
    api_processes: int = Field(default=1, ge=1, le=64)
    api_replicas: int = Field(default=1, ge=1, le=1024)
    # Threads of each API process that run the requests' database work at once (a case's read, the
    # lists, the summary, the commands' checks and answers; the rest wait their turn). One process
    # runs Python in one thread at a time: past two, more threads only took turns on it, and cost
    # every request more (`make bench`, on SQLite and PostgreSQL alike: a case read 1.67 -> 1.41 ms
    # of CPU and its p99 69 -> 35 ms on PostgreSQL, going from 40 to 2). What waits on the network
    # (an identity provider, the documents' store, Temporal) runs in anyio's pool (but a case key's
    # unwrapping by Vault, on a cache miss, runs in these threads; a Vault that stayed silent is then
    # left alone for its timeout and asked by one call at a time: ``reintegration.vault``).
    api_threads: int = Field(default=2, ge=1, le=256)
    # Where each Python process of the stack (each API process, the worker) runs: ``auto`` takes a
    # CPU that no other process sharing this temporary folder took, ``off`` leaves it to the kernel,
    # a list (``0``, ``1-3``) names the CPUs. Threads of one process on two CPUs hand work over at
    # several times the cost (a case read 1.65-1.99 -> 1.02-1.07 ms of the API's CPU, `make bench`).
    # Off unless asked: `reintegration run` (all of the stack on one machine) asks for ``auto``;
    # containers do not see each other's claims. See ``reintegration.affinity``.
    cpu_affinity: str = "off"
    # A token bucket per verified subject (per client address without a valid token), for all the
    # API's processes together (see api_processes).
    rate_limit_per_minute: int = Field(default=600, ge=1)
    rate_limit_burst: int = Field(default=120, ge=1)

    seed_agencies: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(a) for a in DEVELOPMENT_AGENCIES],
        description="Agencies registered on a development start when the registry is empty",
    )
    default_agencies: dict[str, str] = Field(
        default_factory=lambda: dict(DEVELOPMENT_DEFAULT_AGENCIES),
        description="The agency a task goes to when the caseworker names none, by service",
    )

    journey: JourneyConfig = Field(default_factory=JourneyConfig)

    # What a partner sees of the person, by service: only with data_sharing consent, only these.
    partner_fields: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEVELOPMENT_PARTNER_FIELDS.items()}
    )

    # The reports' small cells (reintegration/reports.py): a count under this is shown as "<5"; a
    # request may raise it, never lower it. 2 at least (1 would hide nothing).
    report_min_cell: int = Field(default=5, ge=2, le=1000)

    # Where the supervisors of a region are told about stalled cases (a webhook; the log without one).
    supervision_webhook_url: str | None = None
    supervision_webhook_secret: str | None = None

    # Where agencies' webhooks may be (reintegration/webhooks.py). The guard refuses loopback,
    # private, link-local and metadata addresses; on by default outside development, and production
    # refuses to turn it off. Private networks where agencies really are (a VPN) can be named here.
    webhook_guard: bool | None = None
    webhook_private_networks: list[str] = Field(default_factory=list)
    # How long a new webhook address waits for its agency's confirmation.
    webhook_verification_hours: float = Field(default=24.0, gt=0)

    # How long a stored answer to an Idempotency-Key is kept; after that the key is new again.
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)

    # Documents (reintegration/documents.py): the largest accepted, and where their encrypted bytes
    # go: "local" (data/blobs/, the embedded default) or "s3" (an S3-compatible store: its endpoint,
    # region, bucket and access key id; the secret key from a file, never as a value).
    document_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    blob_store: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "reintegration-documents"
    s3_access_key_id: str | None = None
    s3_secret_access_key_file: Path | None = None

    # Whom a caseworker asks about a possible duplicate found in another country's office (by
    # country code: an office's shared mailbox or phone, never a person's data), e.g.
    # {"PT": "supervision-pt@example.org"}. A country without one: "the supervisors in <country>".
    office_contacts: dict[str, str] = Field(default_factory=dict)

    # E-mail to people (reintegration/mail.py): the SMTP server that sends the notifications; none
    # without a host (the in-app inbox only). "starttls" upgrades a plain connection, "tls" connects
    # over TLS from the start (port 465), "none" sends in clear (a local relay only: production
    # refuses it with credentials). The password from a file, never as a value.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password_file: Path | None = None
    smtp_timeout_seconds: float = Field(default=20.0, gt=0)
    mail_from: str = "Reintegration Orchestrator <notifications@localhost>"
    # The hour (UTC, 0-23) at which the daily digests go to those who chose one.
    digest_hour: int = Field(default=7, ge=0, le=23)

    # Delivery of tasks to agencies' webhooks.
    delivery_timeout_seconds: float = 10.0
    delivery_retry_initial_seconds: float = 1.0
    delivery_retry_max_seconds: float = 300.0

    # OpenTelemetry traces (reintegration/tracing.py): the API's requests through Temporal to the
    # database and the partners' webhooks, exported over OTLP/HTTP to where the standard
    # OTEL_EXPORTER_OTLP_* variables say. Off by default; never with personal data in a span.
    tracing: bool = False

    @field_validator("tracing", mode="before")
    @classmethod
    def _empty_tracing_is_off(cls, value: Any) -> Any:
        return False if value == "" else value  # as docker-compose passes an unset variable

    @field_validator(
        "oidc_client_id",
        "oidc_client_secret_file",
        "smtp_host",
        "smtp_username",
        "smtp_password_file",
        "database_password_file",
        "temporal_config_file",
        "temporal_tls_ca_file",
        "temporal_tls_cert_file",
        "temporal_tls_key_file",
        "temporal_tls_server_name",
        "temporal_api_key_file",
        "oidc_issuer",
        "oidc_audience",
        "oidc_jwks_url",
        "jwt_signing_key_file",
        "s3_secret_access_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # docker-compose passes an unset variable as "" (and Path("") would be the current folder: a
        # TLS file "." that cannot be read, production counting itself authenticated). Only these
        # optional values: an empty REINTEGRATION_ENVIRONMENT, say, stays an error, never a default.
        return None if value == "" else value

    @field_validator("cpu_affinity")
    @classmethod
    def _check_cpu_affinity(cls, value: str) -> str:
        try:
            return affinity.check_setting(value)
        except ValueError as exc:
            raise ValueError(f"REINTEGRATION_CPU_AFFINITY is auto, off or a CPU list: {exc}") from None

    @field_validator("metrics_token_file", "worker_metrics_port", mode="before")
    @classmethod
    def _empty_metrics_setting_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # as docker-compose passes an unset variable

    @model_validator(mode="after")
    def _check_oidc(self) -> Settings:
        refused = sorted(set(self.oidc_algorithms) - OIDC_ALGORITHMS)
        if refused or not self.oidc_algorithms:
            # "none" and HS256 would let anyone holding the audience (or nothing at all) sign tokens.
            raise ValueError(
                f"oidc_algorithms may only hold asymmetric algorithms "
                f"({', '.join(sorted(OIDC_ALGORITHMS))}); refused: {', '.join(refused) or 'an empty list'}"
            )
        if self.oidc_issuer and not (self.oidc_audience and self.oidc_jwks_url):
            raise ValueError(
                "REINTEGRATION_OIDC_ISSUER needs REINTEGRATION_OIDC_AUDIENCE and REINTEGRATION_OIDC_JWKS_URL"
            )
        if self.oidc_client_id and not self.oidc_issuer:
            raise ValueError("REINTEGRATION_OIDC_CLIENT_ID needs REINTEGRATION_OIDC_ISSUER (the provider)")
        if "openid" not in self.oidc_scopes:
            raise ValueError("REINTEGRATION_OIDC_SCOPES must hold openid")
        if not self.public_url.startswith(("https://", "http://")):
            raise ValueError("REINTEGRATION_PUBLIC_URL must be an http(s):// address")
        return self

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Settings:
        """Production starts only with real authentication, PostgreSQL and real secrets; all problems at once."""
        if self.environment != "production":
            return self
        problems = []
        if not self.database_url or not self.database_url.startswith(("postgresql", "postgres://")):
            problems.append("DATABASE_URL must point at PostgreSQL")
        if not (self.oidc_issuer and self.oidc_audience and self.oidc_jwks_url):
            problems.append(
                "OIDC is required: set REINTEGRATION_OIDC_ISSUER, REINTEGRATION_OIDC_AUDIENCE and "
                "REINTEGRATION_OIDC_JWKS_URL"
            )
        elif not self.oidc_jwks_url.startswith("https://"):
            problems.append("REINTEGRATION_OIDC_JWKS_URL must be an https:// address")
        if self.workspace:
            # People sign in to the workspace with the provider: no development sign-in page here.
            if self.oidc_client_secret_file is not None and not _holds_a_secret(self.oidc_client_secret_file):
                problems.append(
                    "REINTEGRATION_OIDC_CLIENT_SECRET_FILE is empty or cannot be read: paste the workspace "
                    "client's secret from the provider"
                )
            if not (self.oidc_client_id and self.oidc_client_secret_file):
                problems.append(
                    "the workspace needs its OIDC client: set REINTEGRATION_OIDC_CLIENT_ID and "
                    "REINTEGRATION_OIDC_CLIENT_SECRET_FILE (or REINTEGRATION_WORKSPACE=false)"
                )
            if self.oidc_issuer and not self.oidc_issuer.startswith("https://"):
                problems.append("REINTEGRATION_OIDC_ISSUER must be an https:// address for the workspace's sign-in")
            if not self.public_url.startswith("https://"):
                problems.append("REINTEGRATION_PUBLIC_URL must be the workspace's https:// address")
        if self.smtp_host and self.smtp_security == "none" and self.smtp_username:
            problems.append(
                "REINTEGRATION_SMTP_SECURITY=none would send the SMTP credentials in clear; use starttls or tls"
            )
        if self.jwt_signing_key_file is not None:
            problems.append(
                "REINTEGRATION_JWT_SIGNING_KEY_FILE is the development signing key; production accepts OIDC tokens only"
            )
        if not (self.temporal_authenticated or self.temporal_allow_unauthenticated):
            problems.append(
                "Temporal's frontend must be reached with mTLS (REINTEGRATION_TEMPORAL_TLS_CERT_FILE and "
                "_KEY_FILE) or an API key (REINTEGRATION_TEMPORAL_API_KEY_FILE): whoever reaches it "
                "unauthenticated can act as a worker (or set REINTEGRATION_TEMPORAL_ALLOW_UNAUTHENTICATED=true "
                "where the network admits no one else)"
            )
        if self.webhook_guard is False:
            problems.append(
                "REINTEGRATION_WEBHOOK_GUARD=false would let tasks go to loopback, private and metadata "
                "addresses; name a VPN's range in REINTEGRATION_WEBHOOK_PRIVATE_NETWORKS instead"
            )
        if self.supervision_webhook_url and self.supervision_webhook_secret is None:
            problems.append("REINTEGRATION_SUPERVISION_WEBHOOK_URL needs REINTEGRATION_SUPERVISION_WEBHOOK_SECRET")
        if self.supervision_webhook_secret is not None and is_placeholder_secret(self.supervision_webhook_secret):
            problems.append(
                f"REINTEGRATION_SUPERVISION_WEBHOOK_SECRET is a placeholder (give {MIN_SECRET_LENGTH}+ "
                "random characters)"
            )
        # The key-encryption key has its own check: _refuse_development_kek_in_production.
        if problems:
            raise ValueError("refused in production: " + "; ".join(problems))
        return self

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            if self.database_password_file is not None:
                password = self.database_password_file.read_text().strip()
                url = make_url(url).set(password=password).render_as_string(hide_password=False)
            return url
        return f"sqlite:///{(self.data_dir / 'reintegration.db').as_posix()}"

    @model_validator(mode="after")
    def _check_temporal_auth(self) -> Settings:
        if (self.temporal_tls_cert_file is None) != (self.temporal_tls_key_file is None):
            raise ValueError("REINTEGRATION_TEMPORAL_TLS_CERT_FILE and REINTEGRATION_TEMPORAL_TLS_KEY_FILE go together")
        return self

    @model_validator(mode="after")
    def _take_the_temporal_profile(self) -> Settings:
        """A profile of Temporal's client configuration file names the frontend and the namespace."""
        if self.temporal_config_file is not None:
            profile = self.temporal_client_profile()
            if profile is not None:
                self.temporal_address = profile.address or self.temporal_address
                self.temporal_namespace = profile.namespace or self.temporal_namespace
        return self

    def temporal_client_profile(self) -> ClientConfigProfile | None:
        """The profile of ``temporal_config_file`` (None without one); a clear error for a file or
        profile that is not there, never the file's content (it may hold an API key)."""
        if self.temporal_config_file is None:
            return None
        if not self.temporal_config_file.is_file():
            raise ValueError(f"REINTEGRATION_TEMPORAL_CONFIG_FILE: no such file: {self.temporal_config_file}")
        try:
            return ClientConfigProfile.load(
                profile=self.temporal_profile, config_source=self.temporal_config_file, disable_env=True
            )
        except Exception as exc:  # the SDK's parser raises several kinds
            raise ValueError(
                f"REINTEGRATION_TEMPORAL_CONFIG_FILE: profile {self.temporal_profile!r} not read from "
                f"{self.temporal_config_file} ({type(exc).__name__})"
            ) from None

    @property
    def temporal_authenticated(self) -> bool:
        """The client proves who it is to Temporal's frontend: a client certificate or an API key."""
        profile = self.temporal_client_profile()
        if profile is not None:
            if profile.tls is not None and profile.tls.disabled:
                return False  # a key or a certificate sent in clear proves nothing to anyone
            return bool(profile.api_key) or (profile.tls is not None and profile.tls.client_cert is not None)
        return self.temporal_tls_cert_file is not None or self.temporal_api_key_file is not None

    @property
    def idempotency_ttl(self) -> timedelta:
        return timedelta(hours=self.idempotency_ttl_hours)

    @property
    def webhook_guard_on(self) -> bool:
        return self.environment != "development" if self.webhook_guard is None else self.webhook_guard

    @model_validator(mode="after")
    def _check_private_networks(self) -> Settings:
        for name in self.webhook_private_networks:
            try:
                network = ipaddress.ip_network(name, strict=False)
            except ValueError:
                raise ValueError(f"REINTEGRATION_WEBHOOK_PRIVATE_NETWORKS: not a network: {name!r}") from None
            if network.is_loopback or network.is_link_local or network.prefixlen == 0:
                raise ValueError(f"REINTEGRATION_WEBHOOK_PRIVATE_NETWORKS: {name} may never receive tasks")
        return self

    @property
    def kek_path(self) -> Path:
        return self.kek_file or self.data_dir / "kek"

    @field_validator(
        "vault_address",
        "vault_token_file",
        "vault_transit_key",
        "vault_ca_file",
        "audit_anchor_file",
        "audit_anchor_webhook_url",
        "audit_anchor_webhook_secret_file",
        mode="before",
    )
    @classmethod
    def _empty_key_setting_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # as docker-compose passes an unset variable

    @model_validator(mode="after")
    def _check_kek_provider(self) -> Settings:
        if self.kek_provider == "vault":
            if not (self.vault_address and self.vault_address.startswith(("https://", "http://"))):
                raise ValueError(
                    "REINTEGRATION_KEK_PROVIDER=vault needs REINTEGRATION_VAULT_ADDRESS (an http(s):// URL)"
                )
            if not self.vault_transit_key:
                raise ValueError("REINTEGRATION_KEK_PROVIDER=vault needs REINTEGRATION_VAULT_TRANSIT_KEY")
            if (self.vault_token_file is None) == (self.vault_token is None):
                raise ValueError(
                    "REINTEGRATION_KEK_PROVIDER=vault needs the token in REINTEGRATION_VAULT_TOKEN_FILE (or, in "
                    "development, REINTEGRATION_VAULT_TOKEN; not both)"
                )
            if not (vault_name(self.vault_transit_mount) and vault_name(self.vault_transit_key)):
                raise ValueError(
                    "REINTEGRATION_VAULT_TRANSIT_MOUNT and _KEY are names of letters, digits, '_', '.', '-' "
                    "(24 at most)"
                )
        if self.audit_anchor_webhook_url is not None:
            if not self.audit_anchor_webhook_url.startswith(("https://", "http://")):
                raise ValueError("REINTEGRATION_AUDIT_ANCHOR_WEBHOOK_URL must be an http(s):// address")
            if self.audit_anchor_webhook_secret_file is None:
                raise ValueError(
                    "REINTEGRATION_AUDIT_ANCHOR_WEBHOOK_URL needs REINTEGRATION_AUDIT_ANCHOR_WEBHOOK_SECRET_FILE"
                )
        return self

    @model_validator(mode="after")
    def _refuse_development_kek_in_production(self) -> Settings:
        if self.environment == "production":
            if self.kek_provider == "file":
                if self.kek_file is None:
                    raise ValueError("production needs REINTEGRATION_KEK_FILE (the key-encryption key)")
                if is_development_kek_file(self.kek_file):
                    raise ValueError("the key-encryption key file is a development key; production refuses it")
            else:
                if self.vault_token is not None:
                    raise ValueError(
                        "REINTEGRATION_VAULT_TOKEN is a value; production reads the token from "
                        "REINTEGRATION_VAULT_TOKEN_FILE"
                    )
                if not (self.vault_address or "").startswith("https://"):
                    raise ValueError("REINTEGRATION_VAULT_ADDRESS must be an https:// address in production")
            if any(is_development_kek_file(path) for path in self.kek_previous_files):
                raise ValueError("a previous key-encryption key file is a development key; production refuses it")
            if self.audit_anchor_webhook_url and not self.audit_anchor_webhook_url.startswith("https://"):
                raise ValueError("REINTEGRATION_AUDIT_ANCHOR_WEBHOOK_URL must be an https:// address in production")
        return self

    @property
    def audit_anchor_path(self) -> Path:
        return self.audit_anchor_file or self.data_dir / "audit-anchors"

    @property
    def signing_key_path(self) -> Path:
        return self.jwt_signing_key_file or self.data_dir / "dev-signing-key"


@lru_cache
def get_settings() -> Settings:
    return Settings()
