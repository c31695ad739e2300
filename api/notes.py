"""Case notes over HTTP: ``/v1/cases/{id}/notes`` for the case's staff, ``/v1/tasks/{id}/notes`` for a
task (its partner agency and the case's staff). Stored and sealed by ``reintegration.notes``.

Adding a note is a change like any other command (``Pipeline.once``: one note per Idempotency-Key,
its ``note.add`` audit row, a repeat answered with the first note); a note is never added to a closed
case. Every read of notes is audited (``note.read``, with how many were read, never their text)
before the notes leave: no row, no notes (503).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlmodel import col, select

from api.access_log import bind_ids
from api.audit import AuditorDep, Entry
from api.cases import CASEWORK, CaseId, TaskId
from api.deps import SessionDep, keyring_of, require
from api.errors import Conflict, responses
from api.journeys import case_in_scope, task_in_scope
from api.languages import N_
from api.pagination import Cursor, Keyset, Limit, page
from api.pipeline import Pipeline, commands_for
from api.schemas import Page
from reintegration import notes
from reintegration.db import CaseRecord, NoteRecord
from reintegration.tokens import Claims
from workflows.model import Role

router = APIRouter(tags=["notes"])

NOTES_ORDER = Keyset(col(NoteRecord.created_at), col(NoteRecord.note_id), descending=True)
TASK_NOTE_WRITERS = (Role.partner, Role.caseworker, Role.supervisor)

NoteText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=notes.MAX_NOTE_CHARACTERS),
    Field(
        description=f"What happened, in the writer's words (1 to {notes.MAX_NOTE_CHARACTERS} characters)",
        examples=["Phone call: she is settled at the shelter and asked about language classes."],
    ),
]


class NoteCreate(BaseModel):
    """A new note."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Phone call: settled at the shelter, asked about classes."}]},
    )

    text: NoteText


class NoteAuthor(BaseModel):
    sub: str = Field(description="The writer's user id")
    role: Role
    agency: str | None = Field(default=None, description="The writer's agency, for a partner's note")


class NotePublic(BaseModel):
    """A note as its reader sees it."""

    note_id: str
    case_id: str | None = Field(description="The case's id (none for a partner, who knows the case by its reference)")
    task_id: str | None = Field(default=None, description="The task the note is on; none for the case's own notes")
    author: NoteAuthor
    created_at: datetime
    text: str | None = Field(description="None once the case's personal data was erased")


def note_public(note: notes.Note, *, partner: bool = False) -> NotePublic:
    """The note as its reader sees it: a partner, as on its task, without the case's id."""
    return NotePublic(
        note_id=note.note_id,
        case_id=None if partner else note.case_id,
        task_id=note.task_id,
        author=NoteAuthor(sub=note.author_sub, role=Role(note.author_role), agency=note.author_agency),
        created_at=note.created_at,
        text=note.text,
    )


def _open_case(case: CaseRecord) -> None:
    if case.status == "closed":
        raise Conflict(N_("the case is closed: notes can no longer be added to it"), allowed_steps=[])


def _write(
    p: Pipeline, case_id: str, task_id: str | None, note_id: str, text: str, task_agency: str | None = None
) -> NotePublic:
    """Write the note and its ``note.add`` row in one transaction (scope and case checked by the
    caller, in this thread), or give the one written under this id already (a claim taken over after
    a crash between the note and its answer)."""
    session, user = p.session, p.user
    keyring = keyring_of(session)
    existing = session.get(NoteRecord, note_id)
    if existing is None:
        existing = notes.add_note(
            session,
            keyring,
            note_id=note_id,
            case_id=case_id,
            task_id=task_id,
            author_sub=user.sub,
            author_role=user.role.value,
            author_agency=user.agency if user.role == Role.partner else None,
            text=text,
            at=datetime.now(UTC),
            task_agency=task_agency,
        )
        session.flush()
        p.auditor.stage(_added({"case_id": case_id, "task_id": task_id, "note_id": note_id}))
        session.commit()
    return note_public(notes.opened(keyring, existing), partner=user.role == Role.partner)


def _add_to_case(p: Pipeline, case_id: str, note_id: str, text: str) -> NotePublic:
    _open_case(case_in_scope(p.session, case_id, p.user))
    return _write(p, case_id, None, note_id, text)


def _add_to_task(p: Pipeline, task_id: str, note_id: str, text: str) -> NotePublic:
    task = task_in_scope(p.session, task_id, p.user)
    case = p.session.get(CaseRecord, task.case_id)
    if case is not None:
        _open_case(case)
    return _write(p, task.case_id, task_id, note_id, text, task_agency=task.agency_id)


def _added(answer: dict[str, Any]) -> list[Entry]:
    return [
        Entry(
            "note.add",
            case_id=answer.get("case_id"),
            task_id=answer.get("task_id"),
            status=201,
            detail={"note_id": answer.get("note_id")},
        )
    ]


@router.post(
    "/v1/cases/{case_id}/notes",
    status_code=201,
    response_model=NotePublic,
    summary="Add a note to a case",
    description="The case's caseworkers and supervisors; sealed with the case's key; `409` on a closed case.",
    responses=responses(401, 403, 404, 409, 413, 422, 503),
)
async def add_case_note(
    case_id: CaseId, body: NoteCreate, p: Annotated[Pipeline, commands_for(*CASEWORK)]
) -> NotePublic | JSONResponse:
    bind_ids(case_id=case_id)
    return await _once(
        p,
        f"/v1/cases/{case_id}/notes",
        body,
        case_id,
        in_scope=lambda: case_in_scope(p.session, case_id, p.user),  # 404 once the case left the caller's countries
        add=lambda note_id: _add_to_case(p, case_id, note_id, body.text),
    )


@router.post(
    "/v1/tasks/{task_id}/notes",
    status_code=201,
    response_model=NotePublic,
    summary="Add a note to a task",
    description=(
        "The partner agency that holds the task, and the case's caseworkers and supervisors; `409` on a closed case."
    ),
    responses=responses(401, 403, 404, 409, 413, 422, 503),
)
async def add_task_note(
    task_id: TaskId, body: NoteCreate, p: Annotated[Pipeline, commands_for(*TASK_NOTE_WRITERS)]
) -> NotePublic | JSONResponse:
    task = await p.task(task_id)  # 404 outside the caller's scope, before anything is claimed
    return await _once(
        p,
        f"/v1/tasks/{task_id}/notes",
        body,
        task.case_id,
        in_scope=lambda: task_in_scope(p.session, task_id, p.user),  # 404 once no longer the caller's
        add=lambda note_id: _add_to_task(p, task_id, note_id, body.text),
    )


async def _once(
    p: Pipeline,
    path: str,
    body: NoteCreate,
    case_id: str,
    *,
    in_scope: Callable[[], object],
    add: Callable[[str], NotePublic],
) -> NotePublic | JSONResponse:
    """A note added once per Idempotency-Key (its row written with it); a repeat held to the scope."""

    def replay(stored: dict[str, Any]) -> dict[str, Any]:
        in_scope()
        return stored

    async def run(note_id: str) -> NotePublic:
        return await p.db(add, note_id)

    return await p.once(
        path=path,
        request=body.model_dump(mode="json"),
        run=run,
        audit=_added,
        status_code=201,
        case_id=case_id,
        replay=replay,
        audited_in_run=True,
    )


@router.get(
    "/v1/cases/{case_id}/notes",
    response_model=Page[NotePublic],
    summary="The notes of a case, newest first",
    description="Every note of the case, its tasks' included; each read is audited (`note.read`).",
    responses=responses(401, 403, 404, 422, 503),
)
def list_case_notes(
    case_id: CaseId,
    user: Annotated[Claims, require(*CASEWORK)],
    session: SessionDep,
    auditor: AuditorDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[NotePublic]:
    case_in_scope(session, case_id, user)
    query = select(NoteRecord).where(col(NoteRecord.case_id) == case_id)
    rows, following = page(session, query, NOTES_ORDER, limit=limit, cursor=cursor)
    auditor.record("note.read", case_id=case_id, detail={"notes": len(rows)})  # before the notes leave
    return Page(items=[note_public(n) for n in notes.opened_all(keyring_of(session), rows)], next_cursor=following)


@router.get(
    "/v1/tasks/{task_id}/notes",
    response_model=Page[NotePublic],
    summary="The notes on a task, newest first",
    description=(
        "For the partner agency that holds the task: its own agency's notes and the case staff's; for the "
        "case's caseworkers and supervisors: every note on the task. Each read is audited (`note.read`)."
    ),
    responses=responses(401, 403, 404, 422, 503),
)
def list_task_notes(
    task_id: TaskId,
    user: Annotated[Claims, require(*TASK_NOTE_WRITERS)],
    session: SessionDep,
    auditor: AuditorDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[NotePublic]:
    task = task_in_scope(session, task_id, user)
    query = select(NoteRecord).where(col(NoteRecord.task_id) == task_id)
    if user.role == Role.partner:
        query = query.where(notes.partner_may_read(str(user.agency)))
    rows, following = page(session, query, NOTES_ORDER, limit=limit, cursor=cursor)
    auditor.record("note.read", case_id=task.case_id, task_id=task_id, detail={"notes": len(rows)})
    partner = user.role == Role.partner
    opened = notes.opened_all(keyring_of(session), rows)
    return Page(items=[note_public(n, partner=partner) for n in opened], next_cursor=following)
