"""The database: engine, tables of the read model, the task inbox, the timeline and the person vault.

The workflows own the journey; these tables are its projection, written only by activities
(``activities/read_model.py``), except the person vault, which the API writes because the person's
identifying data must never pass through a workflow.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    event,
    false,
    text,
)
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine

from reintegration.crypto import (  # and the data_keys table
    Keyring,
    kek_from_settings,
    previous_keks_from_settings,
)
from reintegration.settings import Settings


class CaseRecord(SQLModel, table=True):
    """The case view: one row per case, moved only forward (by ``version``)."""

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_scope_order", "owner_country", "opened_at", "case_id"),
        Index("ix_cases_order", "opened_at", "case_id"),
        # Covering the supervision summary's one grouped scan.
        Index("ix_cases_summary", "owner_country", "stage", "status", "stalled", "pathway"),
    )

    case_id: str = Field(primary_key=True, max_length=64)
    reference: str = Field(index=True, unique=True, max_length=32)
    version: int = 0
    owner_country: str = Field(max_length=2)
    owner_caseworker: str | None = Field(default=None, index=True, max_length=200)
    origin_country: str = Field(max_length=2)
    destination_country: str = Field(max_length=2)
    stage: str = Field(index=True, max_length=32)
    status: str = Field(index=True, max_length=16)
    pathway: str | None = Field(default=None, index=True, max_length=32)
    is_minor: bool = False
    opened_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    closed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    closure_reason: str | None = Field(default=None, max_length=32)
    next_due_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), index=True))
    stalled: bool = Field(default=False, index=True)
    stalled_since: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    most_overdue_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), index=True))
    stall_reasons: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    stage_entered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # A closure waits for a supervisor's approval (the supervisors' worklists find them by it).
    awaiting_approval: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false(), index=True)
    )
    active_workflow_id: str = Field(max_length=200)
    allowed_steps: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    open_items: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    agencies: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class TaskRecord(SQLModel, table=True):
    """The task inbox of partner agencies, and the caseworker's view of each task."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_agency_status", "agency_id", "status"),
        Index("ix_tasks_country_agency_case", "owner_country", "agency_id", "case_id"),
        Index("ix_tasks_agency_case", "agency_id", "case_id"),
    )

    task_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(index=True, max_length=64)
    case_reference: str = Field(max_length=32)
    owner_country: str = Field(index=True, max_length=2)
    version: int = 0
    service: str = Field(max_length=32)
    agency_id: str = Field(max_length=100)
    status: str = Field(max_length=16)
    stage: str = Field(max_length=32)
    safety_plan: bool = False
    assigned_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    accept_by: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    due_on: date
    accepted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    completed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    declined_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    outcome: str | None = Field(default=None, max_length=16)
    assessment: str | None = Field(default=None, max_length=16)
    notes: str = ""
    outcome_notes: str = ""
    decline_reason: str = ""
    previous_agencies: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class TimelineRecord(SQLModel, table=True):
    """What happened on a case, in order; one row per event, written once."""

    __tablename__ = "timeline"
    __table_args__ = (Index("ix_timeline_case_order", "case_id", "position"),)

    event_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(max_length=64)
    position: int
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    kind: str = Field(max_length=16)
    name: str = Field(max_length=64)
    actor_sub: str | None = Field(default=None, max_length=200)
    actor_role: str | None = Field(default=None, max_length=16)
    task_id: str | None = Field(default=None, max_length=64)
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class PersonRecord(SQLModel, table=True):
    """The person's identifying data, kept apart from everything else.

    ``payload`` is the serialised person; the confidentiality work encrypts it with a per-case key
    so that erasing the key makes it unreadable everywhere.
    """

    __tablename__ = "persons"

    case_id: str = Field(primary_key=True, max_length=64)
    payload: str
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # One more at each correction (``api/person.py``): the person's ETag, apart from the case's.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))


class AgencyRecord(SQLModel, table=True):
    """A partner agency: who it is, where, what it does, and where its tasks are delivered."""

    __tablename__ = "agencies"

    agency_id: str = Field(primary_key=True, max_length=100)
    name: str = Field(max_length=200)
    org_type: str = Field(max_length=64)
    country: str = Field(max_length=2, index=True)
    services: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    webhook_url: str | None = Field(default=None, max_length=2000, description="Confirmed: where tasks go")
    webhook_secret: str | None = Field(default=None, max_length=600, description="Sealed with the system key")
    # A new address (or secret) waits here until a partner of the agency confirms it with the
    # challenge sent to it (reintegration/webhooks.py); until then tasks go to the confirmed one.
    pending_webhook_url: str | None = Field(default=None, max_length=2000)
    pending_webhook_secret: str | None = Field(default=None, max_length=600, description="Sealed with the system key")
    webhook_challenge: str | None = Field(default=None, max_length=600, description="Sealed with the system key")
    webhook_verification_id: str | None = Field(default=None, max_length=64)
    webhook_requested_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    webhook_confirmed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    active: bool = True
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class DeliveryRecord(SQLModel, table=True):
    """One message to an agency's webhook (a new task, or its cancellation), and how it went."""

    __tablename__ = "deliveries"

    delivery_id: str = Field(primary_key=True, max_length=100)
    task_id: str = Field(index=True, max_length=64)
    case_id: str = Field(max_length=64)
    agency_id: str = Field(max_length=100)
    event: str = Field(max_length=32)
    status: str = Field(default="pending", max_length=16)  # pending, delivered, failed, skipped
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class StageVisitRecord(SQLModel, table=True):
    """One stay of a case in a stage, for the days-per-stage statistics."""

    __tablename__ = "stage_visits"
    __table_args__ = (
        Index("ix_stage_visits_stage_days", "stage", "days", "country"),
        Index("ix_stage_visits_stage_country_days", "stage", "country", "days"),
    )

    visit_id: str = Field(primary_key=True, max_length=100)  # the stage event's id
    case_id: str = Field(index=True, max_length=64)
    stage: str = Field(max_length=32)
    country: str = Field(max_length=2, description="The country that managed the case during the stay")
    entered_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    left_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    days: float | None = None


class CaseFactsRecord(SQLModel, table=True):
    """A case's anonymous facts for the reports (``reintegration/case_facts.py``): written by the API,
    outside the person vault, so that they survive an erasure. Picklist values only."""

    __tablename__ = "case_facts"

    case_id: str = Field(primary_key=True, max_length=64)
    sex: str = Field(max_length=32, description="HTCDS prs_Gender value")
    age_band: str = Field(max_length=8, description="Age at identification: 0-11 ... 50+, or unknown")
    recruitment_methods: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    recruitment_websites: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    control_methods: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    sex_exploitation_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    forced_labour_industry: str | None = Field(default=None, max_length=64)
    relationship_to_trafficker: str | None = Field(default=None, max_length=32)
    referred_on: date | None = None
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PersonIndexRecord(SQLModel, table=True):
    """The person vault's blind indexes (``reintegration/person_index.py``): per case, one keyed hash
    of each normalised form of the person's name, birth date and identity number; never the values."""

    __tablename__ = "person_index"
    __table_args__ = (Index("ix_person_index_value", "value"),)

    case_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=32)
    value: str = Field(max_length=64)


class CaseLinkRecord(SQLModel, table=True):
    """Two cases related (family members, co-victims of one trafficking situation): the pair kept in
    one order (``case_a`` < ``case_b``), once. Ids and a relation only, never why."""

    __tablename__ = "case_links"
    __table_args__ = (
        Index("ix_case_links_pair", "case_a", "case_b", unique=True),
        Index("ix_case_links_b", "case_b"),
    )

    link_id: str = Field(primary_key=True, max_length=64)
    case_a: str = Field(max_length=64)
    case_b: str = Field(max_length=64)
    relation: str = Field(max_length=32)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class DocumentRecord(SQLModel, table=True):
    """A document of a case, or of one of its tasks (``reintegration/documents.py``): its bytes
    encrypted in the blob store under ``blob_key``; here only what it is, never a file name."""

    __tablename__ = "documents"
    __table_args__ = (
        Index("ix_documents_case_order", "case_id", "uploaded_at", "document_id"),
        Index("ix_documents_task_order", "task_id", "uploaded_at", "document_id"),
    )

    document_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(max_length=64)
    task_id: str | None = Field(default=None, max_length=64)
    task_agency: str | None = Field(default=None, max_length=100)  # who held the task at the upload
    kind: str = Field(max_length=32)
    media_type: str = Field(max_length=64)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    blob_key: str = Field(max_length=128)
    uploaded_by: str = Field(max_length=200)
    uploader_role: str = Field(max_length=16)
    uploader_agency: str | None = Field(default=None, max_length=100)
    uploaded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class NoteRecord(SQLModel, table=True):
    """A note on a case, or on one of its tasks (``reintegration/notes.py``): written by the API, its
    text sealed with the case's data key, deleted with the case's personal data."""

    __tablename__ = "case_notes"
    __table_args__ = (
        Index("ix_case_notes_case_order", "case_id", "created_at", "note_id"),
        Index("ix_case_notes_task_order", "task_id", "created_at", "note_id"),
    )

    note_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(max_length=64)
    task_id: str | None = Field(default=None, max_length=64)
    author_sub: str = Field(max_length=200)
    author_role: str = Field(max_length=16)
    author_agency: str | None = Field(default=None, max_length=100)
    # On a task: the agency that held it when the note was written (whom a staff note was for).
    task_agency: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    body: str  # sealed: the note's text


class NotificationRecord(SQLModel, table=True):
    """The outbox of notifications to the supervisors of a case's region: each sent once."""

    __tablename__ = "notifications"

    notification_id: str = Field(primary_key=True, max_length=300)
    case_id: str = Field(index=True, max_length=64)
    country: str = Field(max_length=2)
    kind: str = Field(max_length=32)  # stalled, escalated
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16)  # pending, sent
    attempts: int = 0
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class UserRecord(SQLModel, table=True):
    """The directory of the system's users (``reintegration/directory.py``): who may be given a case or
    told of something. Role, countries and agency come from each sign-in (the identity provider is
    their source); an admin may add a user before their first sign-in, set their e-mail address and
    deactivate them. Staff only: no case's data, never a victim's."""

    __tablename__ = "users"

    user_id: str = Field(primary_key=True, max_length=200)
    role: str = Field(max_length=16, index=True)
    countries: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    agency: str | None = Field(default=None, max_length=100, index=True)
    email: str | None = Field(default=None, max_length=320)
    language: str = Field(default="en", max_length=8)
    notify: str = Field(default="email", max_length=16)  # email (at once), digest (daily), none
    active: bool = True
    created_by: str = Field(max_length=16)  # sign-in, admin
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    signed_in_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class UserNotificationRecord(SQLModel, table=True):
    """One notification to one user (``reintegration/inbox.py``): the in-app inbox, and the state of
    its e-mail. Written by the projection in the case's own transaction, once per event and user.
    Facts only (a case reference, a service, a stage): never personal data or a note."""

    __tablename__ = "user_notifications"
    __table_args__ = (
        Index("ix_user_notifications_user_order", "user_id", "created_at", "notification_id"),
        Index("ix_user_notifications_email", "email_status", "user_id"),
        Index("ix_user_notifications_unread", "user_id", "read_at"),
    )

    notification_id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=200)
    event_id: str = Field(max_length=64)
    case_id: str = Field(max_length=64, index=True)
    case_reference: str = Field(max_length=32)
    kind: str = Field(max_length=32)  # task.assigned, case.handed-over, supervision.stalled...
    task_id: str | None = Field(default=None, max_length=64)
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    read_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # pending (an e-mail to send at once), sent, digest (in the next daily digest), none (no e-mail)
    email_status: str = Field(default="none", max_length=16)
    email_attempts: int = 0
    emailed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    digest_id: str | None = Field(default=None, max_length=64)


class ReassignmentRecord(SQLModel, table=True):
    """A supervisor's bulk reassignment of one caseworker's cases (``workflows/reassignment.py``):
    what was asked, by whom, and, once its workflow ends, what became of each case."""

    __tablename__ = "reassignments"

    reassignment_id: str = Field(primary_key=True, max_length=64)
    created_by: str = Field(max_length=200)
    from_caseworker: str = Field(max_length=200, index=True)
    to_caseworker: str = Field(max_length=200)
    reason: str = ""  # sealed with the system key (free text)
    countries: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    total: int
    done: int = 0
    skipped: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="running", max_length=16)  # running, finished
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class TransferRecord(SQLModel, table=True):
    """A case offered to another country's office, which accepts it (the case's workflow then moves
    it there) or refuses it, with a reason (``api/transfers.py``). One pending per case at most."""

    __tablename__ = "case_transfers"
    __table_args__ = (
        Index("ix_case_transfers_case", "case_id", "status"),
        Index("ix_case_transfers_to", "to_country", "status"),
        Index("ix_case_transfers_from", "from_country", "status"),
        # The one pending transfer of a case: a second asked at the same time fails here.
        Index(
            "ux_case_transfers_pending",
            "case_id",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    transfer_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(max_length=64)
    case_reference: str = Field(max_length=32)
    from_country: str = Field(max_length=2)
    from_caseworker: str | None = Field(default=None, max_length=200)
    to_country: str = Field(max_length=2)
    to_caseworker: str | None = Field(default=None, max_length=200)
    reason: str = ""  # sealed with the case's key (free text)
    # pending; accepting (an acceptance on its way to the case's workflow); accepted (recorded with the
    # journey's own ``transferred`` event); refused; withdrawn (by the offering office, or by the case:
    # handed over on arrival, or closed)
    status: str = Field(default="pending", max_length=16)
    requested_by: str = Field(max_length=200)
    requested_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    decided_by: str | None = Field(default=None, max_length=200)
    decided_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    refusal: str = ""  # sealed with the case's key (free text)


class PlanDraftRecord(SQLModel, table=True):
    """The reintegration plan drafted before arrival, by the receiving caseworker (or the owning
    office): the services foreseen, and notes sealed with the case's key. Only a draft: the plan is
    the ``reintegration-plan`` step, recorded by the owning office."""

    __tablename__ = "plan_drafts"

    case_id: str = Field(primary_key=True, max_length=64)
    services: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    notes: str = ""  # sealed
    version: int = 1
    updated_by: str = Field(max_length=200)
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class IdempotencyRecord(SQLModel, table=True):
    """A request made with an ``Idempotency-Key``: its fingerprint and, once done, its response."""

    __tablename__ = "idempotency_keys"

    sub: str = Field(primary_key=True, max_length=200)
    key: str = Field(primary_key=True, max_length=200)
    request_hash: str = Field(max_length=64)
    resource_id: str = Field(max_length=64, description="The id a creating request gives what it creates")
    status_code: int | None = None
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    case_id: str | None = Field(default=None, index=True, max_length=64, description="The case the response shows")
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))


class WebSessionRecord(SQLModel, table=True):
    """A person signed in to the web workspace. The cookie holds a random token; only its hash is
    kept here, so a copy of this table opens no session. Staff claims only, never a case's data."""

    __tablename__ = "web_sessions"

    token_hash: str = Field(primary_key=True, max_length=64)
    claims: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_seen_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))


class ReadModelChanges(SQLModel, table=True):
    """How many times the read model's cases, tasks and stays were written: one row, counted up in
    every projection's transaction. A figure computed from them at one count holds until it moves
    (``api.supervision``'s summary, kept by each API process)."""

    __tablename__ = "read_model_changes"

    id: int = Field(primary_key=True)  # always 1
    changes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class AuditRecord(SQLModel, table=True):
    """One action, or one read of personal data: who, what, which case or task, when.

    Append-only and chained: ``hash`` covers the row's fields and ``prev_hash`` (see
    ``reintegration/audit.py``). Ids and action names only, never personal data.
    """

    __tablename__ = "audit_trail"
    __table_args__ = (Index("ix_audit_trail_case_seq", "case_id", "seq"),)

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor_sub: str = Field(max_length=200)
    actor_role: str = Field(max_length=16)
    actor_agency: str | None = Field(default=None, max_length=100)
    action: str = Field(max_length=64)
    case_id: str | None = Field(default=None, max_length=64)
    task_id: str | None = Field(default=None, max_length=64)
    request_id: str = Field(max_length=200)
    status: int | None = None
    replay: bool = Field(default=False, description="An Idempotency-Key replay: the same response, no new effect")
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """The audit trail's last row (one row): the lock appends take, and proof the last row is there."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, sa_column=Column(Integer, primary_key=True, autoincrement=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)


def aware(value: datetime) -> datetime:
    """SQLite gives datetimes back without their zone; everything stored is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Connections for every thread that may hold one at once: the API's (``Settings.api_threads``), its
# asyncio executor's, the worker's. Opened only as they are needed.
SQLITE_POOL_SIZE = 40


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Connections kept for as many requests as run at once (the API's threads): a pool smaller
        # than that opens and closes a connection (and sets its pragmas) for each request over it,
        # measured as a fifth of a case read's CPU in `make bench`.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_SIZE,
            # The most recently returned connection first: its page cache is warm. (First in, first
            # out would go round all of them, each with a cold cache: measured slower lists.)
            pool_use_lifo=True,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA secure_delete=ON")  # deleted content (an erased key) is overwritten
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class OutdatedSchema(RuntimeError):
    """The database was made by a version older than the first with migrations."""


def keyring_from_settings(settings: Any, *, pause_silent_vault: bool = False) -> Keyring:
    """The keyring, with a connection pool of its own: a request that holds a connection and needs a
    key must never wait for another request's connection to come back. During a rotation it is given
    the KEKs being replaced too (``kek_previous_files``), so it reads keys not yet re-wrapped.
    ``pause_silent_vault``: the API's (``reintegration.vault``)."""
    return Keyring(
        make_engine(settings),
        kek_from_settings(settings, pause_silent_vault=pause_silent_vault),
        previous=previous_keks_from_settings(settings),
        cache_seconds=settings.key_cache_seconds,
    )


def metadata() -> MetaData:
    """Every table of the project: these, and the data keys' (``reintegration.crypto``)."""
    return SQLModel.metadata


__all__ = [
    "AgencyRecord",
    "AuditHead",
    "AuditRecord",
    "CaseRecord",
    "DeliveryRecord",
    "IdempotencyRecord",
    "NotificationRecord",
    "StageVisitRecord",
    "PersonRecord",
    "ReadModelChanges",
    "ReassignmentRecord",
    "Session",
    "TaskRecord",
    "TimelineRecord",
    "TransferRecord",
    "PlanDraftRecord",
    "UserNotificationRecord",
    "UserRecord",
    "WebSessionRecord",
    "keyring_from_settings",
    "metadata",
    "make_engine",
]
