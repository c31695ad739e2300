"""The person vault: the only place the person's identifying data is kept, encrypted with the
case's data key (``reintegration/crypto.py``). Erasure destroys the key and deletes the row."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from reintegration.crypto import ERASED, Keyring
from reintegration.db import PersonRecord

PURPOSE = "person"


def sealed_person(keyring: Keyring, case_id: str, person: dict[str, Any]) -> str:
    """The person's data as the vault row holds it: encrypted with the case's key."""
    return keyring.seal(case_id, json.dumps(person, default=str), purpose=PURPOSE)


def store_person(session: Session, keyring: Keyring, *, case_id: str, person: dict[str, Any]) -> None:
    """Add the person's record, encrypted, to the session (the caller commits)."""
    session.add(
        PersonRecord(case_id=case_id, payload=sealed_person(keyring, case_id, person), created_at=datetime.now(UTC))
    )


def opened_person(keyring: Keyring, record: PersonRecord) -> dict[str, Any] | None:
    """The person a vault row holds, or None once the case's key was destroyed."""
    plain = keyring.open(record.case_id, record.payload, purpose=PURPOSE)
    return None if plain == ERASED else dict(json.loads(plain))


def load_person(session: Session, keyring: Keyring, *, case_id: str) -> dict[str, Any] | None:
    """The person's data, or None if there is none or it was erased."""
    record = session.get(PersonRecord, case_id)
    return None if record is None else opened_person(keyring, record)
