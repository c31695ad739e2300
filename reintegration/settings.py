"""One settings class for the API, the worker and the command line.

Every value comes from the environment (prefix ``REINTEGRATION_``, except ``DATABASE_URL``) or
its default; the defaults are the embedded development setup under ``./data``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflows.model import JourneyConfig

DEVELOPMENT_AGENCIES: list[dict] = [
    # Seeded into the agency registry on a development start when it is empty.
    {"agency_id": "shelter-es", "name": "Shelter (development)", "org_type": "NGO", "country": "ES",
     "services": ["shelter", "police-protection", "housing", "psychosocial"]},
    {"agency_id": "clinic-es", "name": "Clinic (development)", "org_type": "HealthServiceOrganisation",
     "country": "ES", "services": ["medical", "psychosocial", "shelter", "job-orientation", "financial", "education"]},
    {"agency_id": "legal-aid-es", "name": "Legal aid (development)", "org_type": "LegalService", "country": "ES",
     "services": ["legal-assistance", "legal"]},
    {"agency_id": "consulate-ro", "name": "Consulate of Romania in Spain (development)",
     "org_type": "CentralGovernmentOrganisation", "country": "ES", "services": ["travel-documents"]},
    {"agency_id": "origin-office-ro", "name": "Office in the country of origin (development)",
     "org_type": "NGO", "country": "RO", "services": ["origin-assessment", "family-assessment", "reception"]},
    {"agency_id": "reintegration-partner-ro", "name": "Reintegration partner (development)", "org_type": "NGO",
     "country": "RO", "services": ["medical", "psychosocial", "legal", "job-orientation", "education", "housing",
                                   "financial", "family", "security-follow-up"]},
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


class Settings(BaseSettings):
    """Everything configurable, read once per process."""

    model_config = SettingsConfigDict(env_prefix="REINTEGRATION_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "REINTEGRATION_DATABASE_URL")
    )

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "reintegration"
    temporal_task_queue: str = "case-journeys"
    temporal_ui_port: int = 8233
    temporal_connect_wait_seconds: float = 30.0  # the API starts serving after this even without Temporal

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    jwt_signing_key_file: Path | None = None
    jwt_issuer: str = "reintegration-dev"
    jwt_audience: str = "reintegration-api"
    token_ttl_hours: int = 12

    seed_agencies: list[dict] = Field(
        default_factory=lambda: [dict(a) for a in DEVELOPMENT_AGENCIES],
        description="Agencies registered on a development start when the registry is empty",
    )
    default_agencies: dict[str, str] = Field(
        default_factory=lambda: dict(DEVELOPMENT_DEFAULT_AGENCIES),
        description="The agency a task goes to when the caseworker names none, by service",
    )

    journey: JourneyConfig = Field(default_factory=JourneyConfig)

    # What a partner sees of the person, by service: only with data_sharing consent, only these.
    partner_fields: dict[str, list[str]] = Field(default_factory=lambda: {
        k: list(v) for k, v in DEVELOPMENT_PARTNER_FIELDS.items()})

    # Where the supervisors of a region are told about stalled cases (a webhook; the log without one).
    supervision_webhook_url: str | None = None
    supervision_webhook_secret: str | None = None

    # Delivery of tasks to agencies' webhooks.
    delivery_timeout_seconds: float = 10.0
    delivery_retry_initial_seconds: float = 1.0
    delivery_retry_max_seconds: float = 300.0

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Settings:
        if self.environment == "production":
            if self.database_url is None or self.database_url.startswith("sqlite"):
                raise ValueError("production needs DATABASE_URL pointing at PostgreSQL")
            # The local signing key is a development default; production verifies OIDC tokens
            # (the confidentiality issue). Until then, production refuses to start at all.
            raise ValueError("production authentication (OIDC) is not configured yet")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data_dir / 'reintegration.db').as_posix()}"

    @property
    def signing_key_path(self) -> Path:
        return self.jwt_signing_key_file or self.data_dir / "dev-signing-key"


@lru_cache
def get_settings() -> Settings:
    return Settings()
