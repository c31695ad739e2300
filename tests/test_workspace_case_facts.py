"""The case's anonymous facts in the workspace (issue 17, item 1): the intake's optional section
"Recruitment and control", the case page's "Facts for the statistics" and the page that changes them, each checked
against what ``GET /v1/cases/{id}/facts`` answers afterwards."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlmodel import Session, col, func, select

from reintegration.db import AuditRecord, CaseRecord
from tests.conftest import Stack
from tests.journey import case_body, day
from tests.test_workspace_cases import case_id_of, caseworker, check_page, form_of, hidden, intake
from tests.workspace import Person, csrf_token


async def facts_of(stack: Stack, case_id: str, sub: str = "cw-es-1") -> dict[str, Any]:
    r = await stack.http.get(f"/v1/cases/{case_id}/facts", headers=stack.auth("caseworker", sub, countries=["ES"]))
    assert r.status_code == 200, r.text
    return dict(r.json())


def audited(stack: Stack, case_id: str) -> list[AuditRecord]:
    with Session(stack.engine) as session:
        query = select(AuditRecord).where(col(AuditRecord.case_id) == case_id, col(AuditRecord.action) == "case.facts")
        return list(session.exec(query).all())


def cases_opened(stack: Stack) -> int:
    with Session(stack.engine) as session:
        return session.exec(select(func.count()).select_from(CaseRecord)).one()


async def opened_with_facts(stack: Stack, **victim: Any) -> str:
    """A case opened through the API with the victim's facts given."""
    body = {**case_body(), "victim": victim}
    r = await stack.http.post("/v1/cases", json=body, headers=stack.auth("caseworker", "cw-es-1", countries=["ES"]))
    assert r.status_code == 201, r.text
    return str(r.json()["case_id"])


async def post_facts(person: Person, case_id: str, data: dict[str, Any]) -> Any:
    """The facts' page's form, sent with the page's CSRF token."""
    path = f"/workspace/cases/{case_id}/facts"
    html = await person.page(path)
    return await person.http.post(path, data={**data, "csrf_token": csrf_token(html)})


async def test_the_intake_records_the_facts_and_the_case_page_changes_them(stack):
    sub = f"cw-facts-{uuid.uuid4().hex[:6]}"
    person = await caseworker(stack, sub)
    marker = f"Marker{uuid.uuid4().hex[:8]}"
    try:
        new = await person.page("/workspace/cases/new")
        check_page(new)
        start = new.index('<details class="victim-facts"')
        section = new[start : new.index("</details>", start)]
        assert "<details" in section and " open" not in section.split(">")[0]  # folded while empty
        assert "Recruitment and control (optional)" in section
        for name in ("recruitment_methods", "recruitment_websites", "control_methods", "sex_exploitation_types"):
            assert f'type="checkbox" id="victim-{name.replace("_", "-")}-1" name="victim.{name}"' in section
        assert (
            '<select id="victim-forced-labour-industry"' in section and "Agriculture, forestry and fishing" in section
        )
        assert '<select id="victim-relationship-to-trafficker"' in section and "Family member" in section
        assert 'type="date" id="victim-referred-on"' in section
        assert "Debt bondage" in section and "Withholds documents" in section and "Methods of control" in section

        data = {
            **intake(marker, **{"person.birthdate": "1999-04-02", "identification.identified_on": "2026-11-20"}),
            "victim.control_methods": ["WithholdsDocuments", "DebtBondage"],
            "victim.recruitment_methods": ["ThroughFriendsOrSocialEvents"],
            "victim.forced_labour_industry": "A_AgricultureForestryAndFishing",
            "victim.referred_on": day(-1),
        }
        html = await person.page("/workspace/cases/new")
        form = form_of(html, "/workspace/cases/new")
        r = await person.http.post(
            "/workspace/cases/new",
            data={**data, "csrf_token": csrf_token(html), "idempotency_key": hidden(form, "idempotency_key")},
        )
        case_id = case_id_of(r)
        facts = await facts_of(stack, case_id, sub)
        assert facts["control_methods"] == ["DebtBondage", "WithholdsDocuments"]  # in the picklist's order
        assert facts["recruitment_methods"] == ["ThroughFriendsOrSocialEvents"]
        assert facts["forced_labour_industry"] == "A_AgricultureForestryAndFishing" and facts["referred_on"] == day(-1)
        assert (facts["sex"], facts["age_band"]) == ("Feminine", "25-34")  # 27 when identified

        page = await person.page(f"/workspace/cases/{case_id}")
        check_page(page)
        part = page[page.index('id="case-facts"') : page.index("</section>", page.index('id="case-facts"'))]
        assert page.count("Facts for the statistics") == 1 and "Facts of the case" in page  # two sections, told apart
        for words in (
            "Facts for the statistics",
            "Female",
            "25–34 years",
            "Debt bondage, Withholds documents",
            "Friends or social",
        ):
            assert words in part, words
        assert f'href="/workspace/cases/{case_id}/facts"' in part and marker not in page

        edit = await person.page(f"/workspace/cases/{case_id}/facts")
        check_page(edit)
        assert 'value="DebtBondage" checked' in edit and 'value="A_AgricultureForestryAndFishing" selected' in edit
        r = await post_facts(
            person,
            case_id,
            {"control_methods": ["FalsePromises"], "forced_labour_industry": "F_Construction", "referred_on": day(-2)},
        )
        assert r.status_code == 303 and r.headers["location"] == f"/workspace/cases/{case_id}?done=facts"
        shown = await person.page(r.headers["location"])
        assert "The case facts were saved." in shown
        part = shown[shown.index('id="case-facts"') : shown.index("</section>", shown.index('id="case-facts"'))]
        assert "False promises" in part and "Construction" in part and "Debt bondage" not in part
        assert "Friends or social" not in part  # the form replaces: a box left unticked is cleared
        facts = await facts_of(stack, case_id, sub)
        assert facts["control_methods"] == ["FalsePromises"] and facts["recruitment_methods"] == []
        assert (facts["forced_labour_industry"], facts["referred_on"]) == ("F_Construction", day(-2))
        rows = audited(stack, case_id)
        assert [(row.actor_sub, sorted(row.detail["fields"])) for row in rows] == [
            (sub, ["control_methods", "forced_labour_industry", "recruitment_methods", "referred_on"])
        ]
    finally:
        await person.aclose()


async def test_a_bad_value_is_refused_beside_its_field_and_changes_nothing(stack):
    case_id = await opened_with_facts(stack, control_methods=["DebtBondage"])
    before = await facts_of(stack, case_id)
    person = await caseworker(stack)
    try:
        r = await post_facts(person, case_id, {"control_methods": ["DebtBondage", "Bribery"], "referred_on": "soon"})
        assert r.status_code == 422
        check_page(r.text)
        assert "Check the form" in r.text
        assert re.search(r'id="control-methods-error">.*?Choose one of the options\.</p>', r.text)
        assert re.search(r'id="referred-on-error">.*?Give a date\.</p>', r.text)
        assert 'value="soon"' in r.text  # what was typed stays
        r = await post_facts(person, case_id, {"forced_labour_industry": "Z_Nowhere"})
        assert r.status_code == 422 and re.search(r'id="forced-labour-industry-error">.*?Choose one', r.text)
        assert await facts_of(stack, case_id) == before and audited(stack, case_id) == []
        # At the intake too: beside its field, in the section shown open; no case opened.
        opened = cases_opened(stack)
        marker = f"Marker{uuid.uuid4().hex[:8]}"
        html = await person.page("/workspace/cases/new")
        r = await person.http.post(
            "/workspace/cases/new",
            data={
                **intake(marker, **{"victim.control_methods": "Bribery"}),
                "csrf_token": csrf_token(html),
                "idempotency_key": hidden(form_of(html, "/workspace/cases/new"), "idempotency_key"),
            },
        )
        assert r.status_code == 422 and '<details class="victim-facts" id="victim-section" open>' in r.text
        assert re.search(r'id="victim-control-methods-error">.*?Choose one of the options\.</p>', r.text)
        assert re.search(r'<a href="#victim-control-methods">Recruitment and control · Methods of control: ', r.text)
        assert cases_opened(stack) == opened

        # Another country's caseworker: no such case; a partner, an admin: not their page.
        other = await caseworker(stack, "cw-fr-1", countries="FR")
        partner = await Person(stack).sign_in("partner", "partner-shelter", agency="shelter-es")
        admin = await Person(stack).sign_in("admin", "admin-1", countries="*")
        try:
            path = f"/workspace/cases/{case_id}/facts"
            assert "There is no such case" in await other.page(path, expect=404)
            r = await other.submit(path, {"control_methods": "FalsePromises"}, page="/workspace/cases")
            assert r.status_code == 404
            for who in (partner, admin):
                await who.page(path, expect=403)
                home = "/workspace/inbox" if who is partner else "/workspace/agencies"
                assert (await who.submit(path, {"control_methods": "FalsePromises"}, page=home)).status_code == 403
        finally:
            for who in (other, partner, admin):
                await who.aclose()
        assert await facts_of(stack, case_id) == before and audited(stack, case_id) == []

        # Once the case is closed: read-only, said so; a form sent anyway is refused.
        r = await stack.http.post(
            f"/v1/cases/{case_id}/steps/withdraw-consent",
            json={"withdrawn_on": day(0)},
            headers=stack.auth("caseworker", "cw-es-1", countries=["ES"]),
        )
        assert r.status_code == 200, r.text
        page = await person.page(f"/workspace/cases/{case_id}")
        assert 'id="case-facts"' in page and f'href="/workspace/cases/{case_id}/facts"' not in page
        edit = await person.page(f"/workspace/cases/{case_id}/facts")
        assert "The case is closed: its facts can no longer be changed." in edit
        assert f'action="/workspace/cases/{case_id}/facts"' not in edit  # no form
        r = await person.submit(f"/workspace/cases/{case_id}/facts", {"control_methods": "FalsePromises"})
        assert r.status_code == 409 and "This is not possible now." in r.text
        assert await facts_of(stack, case_id) == before and audited(stack, case_id) == []
    finally:
        await person.aclose()


async def test_the_facts_speak_spanish_and_french(stack):
    case_id = await opened_with_facts(stack, control_methods=["DebtBondage"], relationship_to_trafficker="Familial")
    words = {
        "es": (
            "Datos para las estadísticas",
            "Servidumbre por deudas",
            "Familiar",
            "Captación y control (opcional)",
            "Editar",
        ),
        "fr": (
            "Données pour les statistiques",
            "Servitude pour dettes",
            "Membre de la famille",
            "Recrutement et contrôle (facultatif)",
            "Modifier",
        ),
    }
    for language, (title, control, relation, optional, edit) in words.items():
        person = await Person(stack, language=language).sign_in("caseworker", "cw-es-1", countries="ES")
        try:
            page = await person.page(f"/workspace/cases/{case_id}")
            check_page(page)
            start = page.index('id="case-facts"')
            part = page[start : page.index("</section>", start)]
            assert title in part and control in part and relation in part and f">{edit}</a>" in part
            facts = await person.page(f"/workspace/cases/{case_id}/facts")
            check_page(facts)
            assert control in facts and "Debt bondage" not in facts and "Methods of control" not in facts
            assert optional in await person.page("/workspace/cases/new")
        finally:
            await person.aclose()
