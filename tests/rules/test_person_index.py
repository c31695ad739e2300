"""The blind indexes' normalisation, and how often duplicates are caught or wrongly suggested on a
small set of variants a caseworker meets (accents, word order, spacing, case, typos, a missing birth
date, siblings). Pure: what is compared is the normalised values, whose keyed hashes are kept."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from reintegration.person_index import (
    IndexKind,
    duplicate_candidates,
    name_words,
    normal_identity,
    normal_name,
    person_values,
    search_candidates,
)


def person(first: str, second: str | None = None, birthdate: str | None = None, identity: str | None = None) -> dict:
    return {"first_name": first, "second_name": second, "birthdate": birthdate, "identity_number": identity}


def may_be_duplicate(existing: dict[str, Any], new: dict[str, Any]) -> bool:
    return bool(duplicate_candidates(new) & set(person_values(existing).items()))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("María José Ionescu", "maria jose IONESCU"),
        ("Ionescu, María-José", "María José Ionescu"),
        ("  Ana   Pop ", "Ana Pop"),
        ("Łukasz Żółć", "Lukasz Zolc"),  # "ł" has no decomposition: folded by the table
        ("Søren Ærø", "soren aero"),
        ("Иван Петров", "ПЕТРОВ иван"),  # Cyrillic: kept in its script, case and order ignored
        ("محمد  علي", "علي محمد"),  # Arabic
        ("Straße", "STRASSE"),  # case folding
        ("Nguyễn Thị Hoa", "Hoa Thi Nguyen"),
        ("O'Brien", "o brien"),
    ],
)
def test_names_that_normalise_alike(a: str, b: str) -> None:
    assert normal_name(a) == normal_name(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Ionescu", "Ionesco"),  # a typo
        ("Maria", "Mari"),  # shortened
        ("Maria Ionescu", "Maria Elena Ionescu"),  # a word added
        ("Maria", "Mariа"),  # the last letter Cyrillic
        ("Ivan Petrov", "Иван Петров"),  # not transliterated
    ],
)
def test_names_that_do_not(a: str, b: str) -> None:
    assert normal_name(a) != normal_name(b)


def test_words_identity_and_values() -> None:
    assert name_words("É-lise", None, "  DUPONT ") == ["e", "lise", "dupont"]
    assert normal_identity(" x-123 456 ") == "X123456" and normal_identity(None) == ""
    assert normal_identity("ав 123-456") == "АВ123456" != normal_identity("вс 123 456")  # series letters count
    assert person_values(person("Ana", "Pop", "1999-04-02", "ab 12")) == {
        IndexKind.name: "ana pop",
        IndexKind.name_birthdate: "ana pop|1999-04-02",
        IndexKind.family_birthdate: "pop|1999-04-02",
        IndexKind.identity: "AB12",
    }
    assert person_values(person("Ana", None, None)) == {IndexKind.name: "ana", IndexKind.name_no_birthdate: "ana"}
    assert person_values(person("  ", None, "not a date")) == {}


# A small test set: (existing person, new person, the same person in truth?).
SAME, OTHER = True, False
SET = [
    (person("María", "Ionescu", "1998-03-14"), person("Maria", "IONESCU", "1998-03-14"), SAME),
    (person("María", "Ionescu", "1998-03-14"), person("Ionescu", "María", "1998-03-14"), SAME),  # fields swapped
    (
        person("Maria", "Ionescu", "1998-03-14"),
        person("Mariana", "Ionescu", "1998-03-14"),
        SAME,
    ),  # first name otherwise
    (
        person("Maria", "Ionescu", "1998-03-14"),
        person("Maria", "Ionesco", "1998-03-14"),
        SAME,
    ),  # typo in the family name
    (person("Maria", "Ionescu", "1998-03-14"), person("Maria", "Ionescu", "1998-04-13"), SAME),  # birth date misread
    (person("Maria", "Ionescu", None), person("Maria", "Ionescu", "1998-03-14"), SAME),  # birth date unknown before
    (person("Maria", "Ionescu", "1998-03-14"), person("Maria", "Ionescu", None), SAME),  # unknown now
    (person("Ana", "Pop", None, "RO-123 456"), person("Anna", "Popp", None, "ro123456"), SAME),  # the document
    (person("Elena", "Ionescu", "1998-03-14"), person("Maria", "Ionescu", "1998-03-14"), OTHER),  # twins
    (person("Maria", "Ionescu", "1998-03-14"), person("Maria", "Ionescu", "2001-07-30"), OTHER),  # namesakes
    (person("Maria", "Popescu", "1990-01-01"), person("Ana", "Pop", "1990-01-01"), OTHER),
    (person("Maria", "Ionescu", None), person("Maria", "Ionescu", None), SAME),
    (person("Олена", "Шевченко", "1995-02-03"), person("олена", "ШЕВЧЕНКО", "1995-02-03"), SAME),  # Cyrillic
    (person("Olena", "Shevchenko", "1995-02-03"), person("Олена", "Шевченко", "1995-02-03"), SAME),  # transliterated
]


def test_duplicates_on_the_test_set() -> None:
    found = [may_be_duplicate(existing, new) for existing, new, _ in SET]
    truth = [same for _, _, same in SET]
    caught = sum(f and t for f, t in zip(found, truth, strict=True))
    missed = sum(t and not f for f, t in zip(found, truth, strict=True))
    wrong = sum(f and not t for f, t in zip(found, truth, strict=True))
    # What the README states: of 11 pairs of one person, 8 are caught; a typo in the family name, a
    # misread birth date and a name transliterated from another script are missed. Of 3 pairs of
    # two people, twins (same family name and birth date) are suggested, which the caseworker
    # dismisses; namesakes born apart are not.
    assert (caught, missed, wrong) == (8, 3, 1), found
    assert found == [True, True, True, False, False, True, True, True, True, False, False, True, True, False]


def test_a_search_by_name_finds_the_person_however_the_name_is_written() -> None:
    existing = set(person_values(person("María José", "Ionescu", "1998-03-14")).items())
    assert search_candidates(name="ionescu maria-jose") & existing
    assert search_candidates(name="IONESCU María José", birthdate=None) & existing
    assert search_candidates(name="Maria Jose Ionescu", birthdate=date(1998, 3, 14)) & existing
    assert not search_candidates(name="Maria Jose Ionescu", birthdate=date(1998, 3, 15)) & existing
    assert not search_candidates(name="Maria Ionescu") & existing  # a word missing
    assert search_candidates(name="   ") == set() and search_candidates() == set()
    assert search_candidates(identity_number="ab-1") == {(IndexKind.identity, "AB1")}
