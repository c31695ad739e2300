"""Case notes: what a caseworker writes after each contact, and what a partner agency writes on its
task. Kept beside the case, never in a workflow's history; the text sealed with the case's data key
(``purpose="note"``), so the erasure of the case's key makes every note unreadable, and the erasure
deletes the rows as well.

Who reads which notes (``api/notes.py`` checks the caller's scope first):
- caseworkers and supervisors of the case's country: every note of the case, its tasks' included;
- a partner agency: the notes on a task its agency holds now that are its own agency's, or the case
  staff's written while its agency held the task; never another agency's, never the staff's notes
  written for the agency that held the task before (a task given to another agency keeps them from
  the new one), never the case's own notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, or_
from sqlmodel import Session, col

from reintegration.crypto import ERASED, Keyring
from reintegration.db import NoteRecord, aware

PURPOSE = "note"
MAX_NOTE_CHARACTERS = 4000  # a note, not a report: documents carry what is longer


@dataclass(frozen=True)
class Note:
    """A note as read: its text opened with the case's key (``None`` once the key was destroyed)."""

    note_id: str
    case_id: str
    task_id: str | None
    author_sub: str
    author_role: str
    author_agency: str | None
    created_at: datetime
    text: str | None


def add_note(
    session: Session,
    keyring: Keyring,
    *,
    note_id: str,
    case_id: str,
    task_id: str | None,
    author_sub: str,
    author_role: str,
    author_agency: str | None,
    text: str,
    at: datetime,
    task_agency: str | None = None,
) -> NoteRecord:
    """Add the note, its text sealed, to the session (the caller commits, with its audit row)."""
    record = NoteRecord(
        note_id=note_id,
        case_id=case_id,
        task_id=task_id,
        author_sub=author_sub,
        author_role=author_role,
        author_agency=author_agency,
        task_agency=task_agency,
        created_at=at,
        body=keyring.seal(case_id, text, purpose=PURPOSE),
    )
    session.add(record)
    return record


def opened(keyring: Keyring, record: NoteRecord) -> Note:
    plain = keyring.open(record.case_id, record.body, purpose=PURPOSE)
    return Note(
        note_id=record.note_id,
        case_id=record.case_id,
        task_id=record.task_id,
        author_sub=record.author_sub,
        author_role=record.author_role,
        author_agency=record.author_agency,
        created_at=aware(record.created_at),
        text=None if plain == ERASED else plain,
    )


def opened_all(keyring: Keyring, records: Sequence[NoteRecord]) -> list[Note]:
    return [opened(keyring, r) for r in records]


def partner_may_read(agency: str) -> ColumnElement[bool]:
    """The notes on a task that its agency reads: its own agency's, and the case staff's written
    while the agency held the task."""
    return or_(
        col(NoteRecord.author_agency) == agency,
        and_(col(NoteRecord.author_agency).is_(None), col(NoteRecord.task_agency) == agency),
    )


def erase_notes(session: Session, case_id: str) -> None:
    """Delete every note of the case (the erasure; its key is destroyed in the same transaction)."""
    session.execute(delete(NoteRecord).where(col(NoteRecord.case_id) == case_id))
