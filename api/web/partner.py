"""A partner agency's workspace: the inbox of its agency's tasks, and each task's page with what its
state allows (accept, decline with a reason, complete with an outcome).

The same service layer as ``/v1/tasks``: the inbox is ``api.tasks.tasks_query`` for the partner
(its own agency's tasks only); a task page is ``api.tasks.read_task`` (exactly what the API shows
the agency, the person's fields audited as a ``task.read-person`` row before they leave); an action
is ``api.tasks.act``, the path of ``POST /v1/tasks/{id}/accept|complete|decline``, with the form's
own idempotency key. A task of another agency is not found (404), as in the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col

from api.documents import list_task_documents
from api.errors import ApiProblem, NotFound, Unavailable, Unprocessable
from api.notes import NoteCreate, add_task_note, list_task_notes
from api.pagination import page
from api.pipeline import Pipeline
from api.tasks import TASKS_ORDER, act, read_task, tasks_query
from api.web import words
from api.web.context import PostedForm, Web, WebDep
from api.web.forms import new_key
from api.web.refusals import form_key
from api.web.upload_words import UPLOAD_REFUSED
from reintegration.db import TaskRecord, aware
from reintegration.documents import DocumentKind
from reintegration.notes import MAX_NOTE_CHARACTERS
from reintegration.overdue import is_overdue
from reintegration.partner_view import PartnerTask
from workflows.model import (
    AcceptTaskBody,
    CompleteTaskBody,
    DeclineTaskBody,
    Role,
    Service,
    TaskAction,
    TaskStatus,
)
from workflows.rules.task_actions import ALLOWED_FROM

router = APIRouter(include_in_schema=False)

OPEN = (TaskStatus.assigned.value, TaskStatus.accepted.value)
# At most this many open tasks on one page (an agency's open work; more is said, never dropped silently).
OPEN_SHOWN = 300
FINISHED_SHOWN = 50
NOTES_SHOWN = 100  # the notes on one task shown on its page, newest first (more is said)

# What each form sends: the action, its body's model (the API's), the form's fields.
ACTIONS: dict[str, tuple[TaskAction, type[BaseModel], tuple[str, ...]]] = {
    "accept": (TaskAction.accept, AcceptTaskBody, ("notes",)),
    "decline": (TaskAction.decline, DeclineTaskBody, ("reason",)),
    "complete": (TaskAction.complete, CompleteTaskBody, ("outcome", "notes", "assessment", "arrived_on")),
}
# The person's fields that hold a date, or a list.
DATE_FIELDS = frozenset({"birthdate", "travel_date"})


@dataclass
class InboxItem:
    """A row of the inbox: the task, never the person."""

    task_id: str
    case_reference: str
    service: str
    status: str
    assigned_at: datetime
    accept_by: datetime
    due_on: date
    overdue: bool


def _item(task: TaskRecord) -> InboxItem:
    return InboxItem(
        task_id=task.task_id,
        case_reference=task.case_reference,
        service=task.service,
        status=task.status,
        assigned_at=aware(task.assigned_at),
        accept_by=aware(task.accept_by),
        due_on=task.due_on,
        overdue=is_overdue(task),
    )


@router.get("/workspace/inbox")
def inbox(web: WebDep, older: Annotated[str | None, Query(max_length=500)] = None) -> HTMLResponse:
    """New tasks first, then accepted ones, the overdue first in each; the finished ones apart."""
    if (refusal := words.only_for(web, Role.partner)) is not None:
        return refusal
    session, user = web.session, web.user
    rows = session.exec(
        tasks_query(user)
        .where(col(TaskRecord.status).in_(OPEN))
        .order_by(col(TaskRecord.assigned_at), col(TaskRecord.task_id))  # the oldest first, if there are too many
        .limit(OPEN_SHOWN)
    ).all()
    items = [_item(t) for t in rows]
    new = sorted((i for i in items if i.status == TaskStatus.assigned), key=lambda i: (not i.overdue, i.accept_by))
    accepted = sorted((i for i in items if i.status == TaskStatus.accepted), key=lambda i: (not i.overdue, i.due_on))
    finished_query = tasks_query(user).where(col(TaskRecord.status).not_in(OPEN))
    try:
        finished, next_older = page(session, finished_query, TASKS_ORDER, limit=FINISHED_SHOWN, cursor=older)
    except Unprocessable:  # a cursor this workspace did not give: the newest ones
        finished, next_older = page(session, finished_query, TASKS_ORDER, limit=FINISHED_SHOWN, cursor=None)
    return web.render(
        "inbox.html",
        {
            "new": new,
            "accepted": accepted,
            "finished": [_item(t) for t in finished],
            "next_older": next_older,
            "older": older,
            "more_open": len(rows) >= OPEN_SHOWN,
        },
    )


@router.get("/workspace/inbox/{task_id}")
def task_page(
    task_id: str,
    web: WebDep,
    done: Annotated[str | None, Query(max_length=20)] = None,
    refused: Annotated[str, Query(max_length=3)] = "",
) -> HTMLResponse:
    """The task exactly as the API shows it to this agency, with the actions its state allows."""
    if (refusal := words.only_for(web, Role.partner)) is not None:
        return refusal
    try:
        upload_refused = UPLOAD_REFUSED.get(int(refused)) if refused.isdigit() else None
        return _task_page(
            web,
            task_id,
            done=done if done in ACTIONS or done in ("note", "document") else None,
            upload_refused=web._(upload_refused) if upload_refused else None,
        )
    except NotFound:
        return _not_found(web)


@router.post("/workspace/inbox/{task_id}/notes")
async def task_note(task_id: str, web: WebDep, form: PostedForm) -> Response:
    """A note on the task, sent as ``POST /v1/tasks/{id}/notes`` sends it (``add_task_note``); back
    to the task page. (Before the actions' route, which would take ``notes`` for an action.)"""
    if (refusal := words.only_for(web, Role.partner)) is not None:
        return refusal
    sent = words.values(form, "text")
    try:
        p = web.pipeline(form_key(form))
    except Unavailable:
        return await _again(web, task_id, "note", sent, notice=_busy(web), status=503)
    try:
        body = NoteCreate.model_validate(sent)
    except ValidationError:
        errors = {"text": web._("Write the note: at most %(count)s characters.") % {"count": MAX_NOTE_CHARACTERS}}
        return await _again(web, task_id, "note", sent, errors=errors, status=422)
    try:
        if (stored := words.stored_refusal(await add_task_note(task_id, body, p))) is not None:
            raise stored  # the form was sent before, and refused: the same refusal again
    except ApiProblem as problem:
        if problem.status in (403, 404):
            return _not_found(web)
        if problem.status in (429, 503):
            return await _again(web, task_id, "note", sent, notice=_busy(web), status=problem.status)
        if problem.status == 409:
            notice = web._("Nothing was added: the case is closed, so its notes can no longer change.")
        else:
            notice = web._("Nothing was added: the note was refused (%(reason)s).") % {
                "reason": web.detail(problem.detail)
            }
        return await _again(web, task_id, "note", sent, notice=notice, status=problem.status)
    return RedirectResponse(f"/workspace/inbox/{task_id}?done=note#task-notes-title", status_code=303)


@router.post("/workspace/inbox/{task_id}/{action}")
async def task_action(task_id: str, action: str, web: WebDep, form: PostedForm) -> Response:
    """Accept, decline or complete the task through the API's ``act``; back to the task page."""
    if (refusal := words.only_for(web, Role.partner)) is not None:
        return refusal
    if action not in ACTIONS:
        return _not_found(web)
    what, model, fields = ACTIONS[action]
    sent = words.values(form, *fields)
    try:
        p = web.pipeline(form_key(form))
    except Unavailable:
        return await _again(web, task_id, action, sent, notice=_busy(web), status=503)
    try:
        body = model.model_validate(sent)
    except ValidationError as exc:
        required = {
            "reason": web._("Give a reason for declining: the caseworker needs it to find another agency."),
            "outcome": web._("Choose the outcome: done, or unable to deliver."),
        }
        errors = words.field_errors(web, exc, required)
        return await _again(web, task_id, action, sent, errors=errors, status=422)
    try:
        if (stored := words.stored_refusal(await act(p, task_id, what, body))) is not None:
            raise stored  # the form was sent before, and refused: the same refusal again
    except ApiProblem as problem:
        if problem.status in (403, 404):
            return _not_found(web)
        return await _refused(web, p, task_id, action, sent, problem)
    return RedirectResponse(f"/workspace/inbox/{task_id}?done={action}", status_code=303)


def _task_page(
    web: Web,
    task_id: str,
    *,
    done: str | None = None,
    action: str | None = None,
    sent: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    status: int = 200,
    upload_refused: str | None = None,
) -> HTMLResponse:
    if len(task_id) > 64:
        raise NotFound("no such task")
    seen = read_task(task_id, web.user, web.session, web.settings, web.auditor)  # audits the person's fields
    assert isinstance(seen, PartnerTask), "a partner sees the partner's view"
    # The notes its agency may read on the task (``GET /v1/tasks/{id}/notes``: audited as its reads are).
    notes = list_task_notes(task_id, web.user, web.session, web.auditor, limit=NOTES_SHOWN, cursor=None)
    now = TaskStatus(seen.status)
    allowed = [name for name, (a, _, _) in ACTIONS.items() if now in ALLOWED_FROM[a]]
    return web.render(
        "task.html",
        {
            "task": seen,
            "person": _person_rows(seen.person),
            "allowed": allowed,
            "keys": {name: new_key() for name in [*allowed, "note", "document"]},
            "documents": list_task_documents(task_id, web.user, web.session, limit=100, cursor=None).items,
            "document_kinds": [k.value for k in DocumentKind],
            "upload_refused": upload_refused,
            "notes": notes.items,
            "more_notes": notes.next_cursor is not None,
            "done": done,
            "action": action,
            "sent": sent or {},
            "errors": errors or {},
            "notice": notice,
            "origin_assessment": seen.service == Service.origin_assessment,
            "reception": seen.service == Service.reception,
        },
        status=status,
    )


def _person_rows(person: dict[str, Any] | None) -> list[tuple[str, str, Any]]:
    """The person's fields the API gave, each with how to show it: (field, kind, value)."""
    rows: list[tuple[str, str, Any]] = []
    for field, value in (person or {}).items():
        if value is None or value == "" or value == []:
            rows.append((field, "missing", None))
        elif field in DATE_FIELDS and isinstance(value, str):
            try:
                rows.append((field, "date", date.fromisoformat(value[:10])))
            except ValueError:
                rows.append((field, "text", value))
        elif isinstance(value, list):
            rows.append((field, "text", ", ".join(str(v) for v in value)))
        elif field == "gender":
            rows.append((field, "label", value))
        else:
            rows.append((field, "text", str(value)))
    return rows


async def _again(
    web: Web,
    task_id: str,
    action: str,
    sent: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    status: int,
) -> HTMLResponse:
    """The task page again, as it is now, with the form's values and what was wrong (off the loop)."""

    def again() -> HTMLResponse:
        try:
            return _task_page(web, task_id, action=action, sent=sent, errors=errors, notice=notice, status=status)
        except NotFound:
            return _not_found(web)

    return await anyio.to_thread.run_sync(again)


async def _refused(
    web: Web, p: Pipeline, task_id: str, action: str, sent: dict[str, str], problem: ApiProblem
) -> Response:
    """The workflow or the API refused the action: nothing changed; say why in words, beside the
    field it concerns where there is one, on the task as it is now."""
    if problem.status == 503:
        return await _again(web, task_id, action, sent, notice=_busy(web), status=503)
    task = await p.db(_task_now, p.session, task_id)
    service = task.service if task is not None else ""
    if problem.status == 422 and action == "complete" and service == Service.origin_assessment:
        errors = {"assessment": web._("An origin assessment that is done says whether return is safe or unsafe.")}
        return await _again(web, task_id, action, sent, errors=errors, status=422)
    if problem.status == 422 and action == "complete" and service == Service.reception:
        errors = {"arrived_on": web._("Give the arrival date: the day the person arrived, not before the departure.")}
        return await _again(web, task_id, action, sent, errors=errors, status=422)
    if task is not None and TaskStatus(task.status) not in ALLOWED_FROM[ACTIONS[action][0]]:
        notice = {
            "accept": web._("Nothing was changed: this task can no longer be accepted (its status now: %(status)s)."),
            "decline": web._("Nothing was changed: this task can no longer be declined (its status now: %(status)s)."),
            "complete": web._("Nothing was changed: this task cannot be completed (its status now: %(status)s)."),
        }[action] % {"status": words.label(web, task.status)}
    elif service == Service.reception and action == "complete":
        notice = web._(
            "Nothing was changed: a reception is confirmed only after the departure is recorded. "
            "Ask the caseworker when the person departs."
        )
    elif problem.status == 422:
        notice = web._("Nothing was changed: the form was refused. Check the fields and send it again.")
    else:
        notice = web._(
            "Nothing was changed: the case does not allow this now. The page shows the task as it is; "
            "ask the caseworker if in doubt."
        )
    return await _again(web, task_id, action, sent, notice=notice, status=problem.status)


def _task_now(session: Session, task_id: str) -> TaskRecord | None:
    session.expire_all()
    return session.get(TaskRecord, task_id)


def _busy(web: Web) -> str:
    return web._(
        "The service is busy or cannot be reached right now, and your action may not have been sent. "
        "The page shows the task as it is: try again in a moment."
    )


def _not_found(web: Web) -> HTMLResponse:
    return words.refused(
        web,
        404,
        web._("Task not found"),
        web._("There is no such task in your agency's inbox. It may have been given to another agency."),
        back="/workspace/inbox",
    )
