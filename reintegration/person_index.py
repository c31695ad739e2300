"""Blind indexes of the person vault: how a case is found by the person's name, birth date or identity
number, and a second case for the same person is caught, without a plain-text name anywhere.

Each index value is a keyed hash (``Keyring.keyed_hash``, HMAC-SHA256 with the system's hash key,
never the case's key, so equal values of two cases match) of a normalised form:

- a name: Unicode decomposed (NFKD) and its accents dropped, case folded, the letters without a
  decomposition folded too (ø o, ł l, đ d, æ ae, œ oe, ı i, þ th, ð d), every character that is not
  a letter or digit of any script a space, the words sorted: "María-José  IONESCU" and "Ionescu,
  Maria Jose" are one name, and so are "Łukasz Søren" and "lukasz soren"; a name in Cyrillic or
  Arabic script is kept in its script (not transliterated: "Иван" is not "Ivan"); a typo
  ("Ionesco"), a name shortened ("Mari"), a word added, or a letter of another script that looks
  alike ("Mariа" with a Cyrillic "а") are other names (false negatives);
- a birth date: the ISO date;
- an identity number: its letters and digits (of any script) only, upper case ("x-123 456" is
  "X123456", "ав 12" is "АВ12").

Kinds kept per person (``IndexKind``): the whole name; the name with the birth date; the family name
with the birth date (a first name spelt otherwise still matches, at the cost of matching siblings
born the same day: false positives a caseworker dismisses); the whole name for a person without a
birth date; the identity number. A person's rows are replaced when their data is corrected and
deleted with the case's personal data (a hash of a name would otherwise outlive the erasure).
Who can read the table and holds the hash key can still test guesses (is "Ana Pop, 1999-04-02" a
case?): the key stays in the keyring, wrapped by the KEK, as every other key.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from reintegration.crypto import Keyring
from reintegration.db import PersonIndexRecord, PersonRecord
from reintegration.persons import load_person

PURPOSE = "person-index"
EMPTY = "-"  # the row of a person with nothing to index by (no name, no number): never matched
_NOT_WORD = re.compile(r"[\W_]+")  # not a letter or digit, of any script
# Letters NFKD does not decompose, as they are commonly written without their mark.
_FOLD = str.maketrans(
    {"ø": "o", "ł": "l", "đ": "d", "ħ": "h", "æ": "ae", "œ": "oe", "ı": "i", "ŀ": "l", "þ": "th", "ð": "d"}
)


class IndexKind(enum.StrEnum):
    name = "name"
    name_birthdate = "name_birthdate"
    family_birthdate = "family_birthdate"
    name_no_birthdate = "name_no_birthdate"
    identity = "identity"


def name_words(*parts: str | None) -> list[str]:
    """A name's words, normalised: accents dropped, case folded, punctuation and spacing ignored,
    in order (the caller sorts them where order must not matter)."""
    text = " ".join(p for p in parts if p)
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().translate(_FOLD)
    return [w for w in _NOT_WORD.split(plain) if w]


def normal_name(*parts: str | None) -> str:
    """The name as one value, whatever the order of its words: "" when it has none."""
    return " ".join(sorted(name_words(*parts)))


def normal_identity(number: str | None) -> str:
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", number or "")).upper()


@dataclass(frozen=True)
class Lookup:
    """What to look for: index kinds and their hashed values (any one matching is a match)."""

    pairs: frozenset[tuple[str, str]]

    def __bool__(self) -> bool:
        return bool(self.pairs)


def _hash(keyring: Keyring, kind: IndexKind, value: str) -> tuple[str, str]:
    return kind.value, keyring.keyed_hash(f"{kind.value}:{value}", purpose=PURPOSE)


def person_values(person: Mapping[str, Any]) -> dict[IndexKind, str]:
    """The normalised values a person is indexed under (their hash is what is kept)."""
    name = normal_name(person.get("first_name"), person.get("second_name"))
    family = normal_name(person.get("second_name"))
    birthdate = _iso(person.get("birthdate"))
    identity = normal_identity(person.get("identity_number"))
    values: dict[IndexKind, str] = {}
    if name:
        values[IndexKind.name] = name
        if birthdate:
            values[IndexKind.name_birthdate] = f"{name}|{birthdate}"
        else:
            values[IndexKind.name_no_birthdate] = name
    if family and birthdate:
        values[IndexKind.family_birthdate] = f"{family}|{birthdate}"
    if identity:
        values[IndexKind.identity] = identity
    return values


def _iso(value: Any) -> str:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and value:
        try:
            return date.fromisoformat(value[:10]).isoformat()
        except ValueError:
            return ""
    return ""


def index_person(session: Session, keyring: Keyring, case_id: str, person: Mapping[str, Any]) -> None:
    """Replace the case's index rows with those of ``person`` (in the caller's transaction)."""
    session.execute(delete(PersonIndexRecord).where(col(PersonIndexRecord.case_id) == case_id))
    for kind, value in person_values(person).items():
        kind_value, hashed = _hash(keyring, kind, value)
        session.add(PersonIndexRecord(case_id=case_id, kind=kind_value, value=hashed))


def forget_person(session: Session, case_id: str) -> None:
    """Delete the case's index rows (its erasure)."""
    session.execute(delete(PersonIndexRecord).where(col(PersonIndexRecord.case_id) == case_id))


def duplicate_candidates(person: Mapping[str, Any]) -> set[tuple[IndexKind, str]]:
    """What an existing person shares with this new one when they may be the same: the identity
    number; with a birth date, the name and birth date, the family name and birth date, or the name of
    a person recorded without one; without a birth date, the name."""
    values = person_values(person)
    wanted: set[tuple[IndexKind, str]] = {
        (kind, values[kind])
        for kind in (IndexKind.identity, IndexKind.name_birthdate, IndexKind.family_birthdate)
        if kind in values
    }
    if IndexKind.name_birthdate in values:
        wanted.add((IndexKind.name_no_birthdate, values[IndexKind.name]))
    elif IndexKind.name in values:
        wanted.add((IndexKind.name, values[IndexKind.name]))
    return wanted


def search_candidates(
    *, name: str | None = None, birthdate: date | None = None, identity_number: str | None = None
) -> set[tuple[IndexKind, str]]:
    """A search: by the whole name (with the birth date, when given), or by an identity number."""
    wanted: set[tuple[IndexKind, str]] = set()
    normal = normal_name(name) if name is not None else ""
    if normal and birthdate is not None:
        wanted.add((IndexKind.name_birthdate, f"{normal}|{birthdate.isoformat()}"))
    elif normal:
        wanted.add((IndexKind.name, normal))
    if identity := normal_identity(identity_number):
        wanted.add((IndexKind.identity, identity))
    return wanted


def lookup(keyring: Keyring, candidates: Iterable[tuple[IndexKind, str]]) -> Lookup:
    """The candidates' hashes, as the index keeps them."""
    return Lookup(frozenset(_hash(keyring, kind, value) for kind, value in candidates))


def matching_cases(session: Session, lookup: Lookup, *, exclude: Iterable[str] = ()) -> set[str]:
    """The cases indexed under any of the lookup's values."""
    if not lookup:
        return set()
    # Each hash names its kind (hashed with it), so the values alone select the rows.
    hashes = sorted(value for _, value in lookup.pairs)
    query = select(col(PersonIndexRecord.case_id)).where(col(PersonIndexRecord.value).in_(hashes))
    return set(session.exec(query).all()) - set(exclude)


def index_missing(engine: Engine, keyring: Keyring, *, batch: int = 200) -> int:
    """Index every person of the vault who has no index rows yet (cases opened before the indexes,
    ``reintegration db upgrade`` and each API start run it); how many were indexed. An erased
    person (no vault row) is never indexed again."""
    done = 0
    while True:
        with Session(engine) as session:
            indexed = select(col(PersonIndexRecord.case_id))
            # Locked (PostgreSQL) until indexed: an erasure deletes the vault row after this commits, and
            # its own delete of the index rows then sees them. (SQLite has one writer at a time.)
            missing = session.exec(
                select(PersonRecord).where(col(PersonRecord.case_id).not_in(indexed)).limit(batch).with_for_update()
            ).all()
            if not missing:
                _sweep(session)
                return done
            for record in missing:
                person = load_person(session, keyring, case_id=record.case_id)
                values = person_values(person or {})
                if not values:  # nothing to index by (or erased): a marker row keeps it from being read again
                    session.add(PersonIndexRecord(case_id=record.case_id, kind=EMPTY, value=EMPTY))
                    continue
                index_person(session, keyring, record.case_id, person or {})
            try:
                session.commit()
            except (IntegrityError, OperationalError):  # another process indexed or erased some meanwhile
                session.rollback()
                continue
            done += len(missing)


def _sweep(session: Session) -> None:
    """Delete the index rows of a case with no vault row (erased while it was being indexed)."""
    session.execute(
        delete(PersonIndexRecord).where(col(PersonIndexRecord.case_id).not_in(select(col(PersonRecord.case_id))))
    )
    session.commit()
