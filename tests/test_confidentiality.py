"""Personal data stays unreadable to anyone without a need, and is forgotten on lawful request.

A journey carries marker strings in every personal field and every free text; afterwards the
markers appear nowhere they must not: not in the logs, not in the Temporal histories read back
through the server without the codec, not in search attributes or memos, not in any database
column (and for SQLite not in the database file's bytes). Then the person's data is erased.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import MetaData, select
from sqlmodel import Session
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.cases import case_public
from reintegration.codec import ENCODING, EncryptionCodec
from reintegration.crypto import (
    ERASED,
    DataKeyRecord,
    Keyring,
    KeyUnavailable,
    kek_from_settings,
)
from reintegration.db import CaseRecord, NoteRecord, PersonRecord, StageVisitRecord, TaskRecord
from reintegration.logs import tap
from reintegration.tokens import mint_codec
from tests.conftest import Stack
from tests.journey import Journey, case_body, day
from tests.test_workspace_cases import case_id_of, caseworker, intake, send_form
from tests.test_workspace_partner import send as send_partner_form
from tests.workspace import Person


def markers() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        name: f"Zq{tag}{name}"
        for name in (
            "first",
            "second",
            "idnumber",
            "phone",
            "place",
            "casenote",
            "tasknote",
            "declined",
            "pathwhy",
            "outcome",
            "withdrawn",
            "authref",
            "threat",
            "cancelled",
            "secret",
            "accepted",
            "handover",
            "freenote",
            "partnernote",
        )
    }


async def workflow_ids(stack: Stack, case_id: str) -> list[str]:
    ids = set()
    for _ in range(50):  # visibility is eventually consistent
        ids = {e.id async for e in stack.client.list_workflows(f'WorkflowId STARTS_WITH "case-{case_id}"')}
        if len(ids) >= 2:
            break
        await asyncio.sleep(0.1)
    return sorted(ids)


async def raw_histories(stack: Stack, case_id: str) -> tuple[Client, dict[str, bytes], list[Payload]]:
    """Every history of the case as the server stores it (a client without the codec), its bytes,
    and every payload in it."""
    plain = Client(
        stack.client.service_client, namespace=stack.settings.temporal_namespace, data_converter=pydantic_data_converter
    )
    histories, payloads = {}, []
    for wid in await workflow_ids(stack, case_id):
        async for execution in plain.list_workflows(f'WorkflowId = "{wid}"'):
            history = await plain.get_workflow_handle(wid, run_id=execution.run_id).fetch_history()
            histories[f"{wid}/{execution.run_id}"] = b"".join(e.SerializeToString() for e in history.events)
            for event in history.events:
                if event.HasField("marker_recorded_event_attributes"):
                    # The SDK's own bookkeeping in markers (a patch's id; a local activity's seq,
                    # attempt and times) is written by the SDK's core in clear; the local activity's
                    # result goes through the codec. Both are in the bytes checked for markers above.
                    marker = event.marker_recorded_event_attributes
                    for key, value in marker.details.items():
                        if (marker.marker_name, key) not in SDK_BOOKKEEPING:
                            _collect_payloads(value, payloads)
                    continue
                if event.HasField("upsert_workflow_search_attributes_event_attributes"):
                    # Search attributes are indexed, so never encrypted: the SDK's patch ids
                    # (TemporalChangeVersion) only; they are checked for markers below too.
                    fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
                    assert set(fields.indexed_fields) <= {"TemporalChangeVersion"}
                    continue
                _collect_payloads(event, payloads)
    return plain, histories, payloads


SDK_BOOKKEEPING = {("core_patch", "patch-data"), ("core_local_activity", "data")}


def _collect_payloads(message: Message, out: list[Payload]) -> None:
    if isinstance(message, Payload):
        out.append(message)
        return
    for _, value in message.ListFields():
        if isinstance(value, Message):
            _collect_payloads(value, out)
        elif isinstance(value, (str, bytes, int, float, bool)):
            continue
        else:  # a repeated field or a map
            for item in value.values() if hasattr(value, "keys") else value:
                if isinstance(item, Message):
                    _collect_payloads(item, out)


def leaks_in_files(paths, m: dict[str, str]) -> list[str]:
    """The markers found in these files' bytes, read by another process: closing a descriptor of a
    SQLite file in this process would drop the locks its live connections hold on it (POSIX locks
    are per process), and the next process to open the database would miss their recent commits."""
    script = (
        "import json, sys; paths, marks = json.load(sys.stdin); "
        "data = b''.join(open(p, 'rb').read() for p in paths); "
        "print(json.dumps([k for k, v in marks.items() if v.encode() in data]))"
    )
    found = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([[str(p) for p in paths], m]),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(found.stdout)


def database_text(stack: Stack) -> str:
    """Every value of every column of every table, as text."""
    metadata = MetaData()
    metadata.reflect(stack.engine)
    parts = []
    with stack.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


async def marked_journey(stack: Stack, m: dict[str, str]) -> Journey:
    """A residence journey to closure with a marker in every personal field and free text."""
    j = Journey(stack)
    body = case_body(
        first_name=m["first"], second_name=m["second"], identity_number=m["idnumber"], mobile_phone=m["phone"]
    )
    body["identification"]["place"] = m["place"]
    r = await stack.http.post("/v1/cases", json=body, headers=j.cw)
    assert r.status_code == 201, r.text
    j.case_id = r.json()["case_id"]
    r = await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw, params={"include": "person"})
    assert r.json()["person"]["first_name"] == m["first"]  # the caseworker reads it back
    await j.step("risk-assessment", {"level": "low", "threats": [m["threat"]], "assessed_on": day(1)})
    await j.step("security-guarantee", {"confirmed_on": day(2), "notes": m["casenote"]})
    await j.step("pathway", {"pathway": "residence", "decided_on": day(3), "reason": m["pathwhy"]})
    shelter = await j.assign("shelter", "shelter-es")
    await j.task_action(shelter["task_id"], "shelter-es", "decline", {"reason": m["declined"]})
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks/{shelter['task_id']}/cancel", headers=j.cw, json={"reason": m["cancelled"]}
    )
    assert r.status_code == 200, r.text
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/tasks",
        headers=j.cw,
        json={"service": "legal-assistance", "agency_id": "legal-aid-es", "notes": m["tasknote"]},
    )
    assert r.status_code == 201, r.text
    task = r.json()
    seen = await stack.http.get(f"/v1/tasks/{task['task_id']}", headers=j.partner("legal-aid-es"))
    assert seen.json()["notes"] == m["tasknote"] and seen.json()["person"]["first_name"] == m["first"]
    await j.task_action(task["task_id"], "legal-aid-es", "accept", {"notes": m["accepted"]})
    await j.task_action(task["task_id"], "legal-aid-es", "complete", {"outcome": "done", "notes": m["outcome"]})
    # Case notes: the caseworker's on the case, the agency's on its task; both read back.
    r = await stack.http.post(f"/v1/cases/{j.case_id}/notes", headers=j.cw, json={"text": m["freenote"]})
    assert r.status_code == 201, r.text
    r = await stack.http.post(
        f"/v1/tasks/{task['task_id']}/notes", headers=j.partner("legal-aid-es"), json={"text": m["partnernote"]}
    )
    assert r.status_code == 201, r.text
    r = await stack.http.get(f"/v1/cases/{j.case_id}/notes", headers=j.cw)
    assert {n["text"] for n in r.json()["items"]} == {m["freenote"], m["partnernote"]}
    await j.step(
        "residence-application",
        {"filed_on": day(5), "permit_type": "victim-of-trafficking", "authority_reference": m["authref"]},
    )
    stack.token("caseworker", "cw-es-2", countries=["ES"])  # known to the directory
    r = await stack.http.post(
        f"/v1/cases/{j.case_id}/reassign", headers=j.supervisor, json={"caseworker": "cw-es-2", "reason": m["handover"]}
    )
    assert r.status_code == 200, r.text
    await j.step("withdraw-consent", {"withdrawn_on": day(6), "notes": m["withdrawn"]})
    assert j.case["status"] == "closed"
    return j


async def test_marker_data_appears_nowhere_it_must_not(stack):
    m = markers()
    with tap() as logs:
        j = await marked_journey(stack, m)
        shown = await j.get()
        # An agency's webhook secret is a secret too.
        r = await stack.http.post(
            "/v1/agencies",
            headers=stack.auth("admin", "admin-1"),
            json={
                "agency_id": f"agency-{m['first'][:12]}",
                "name": "Marker agency",
                "org_type": "NGO",
                "country": "ES",
                "services": ["housing"],
                "webhook_url": "http://127.0.0.1:9/hook",
                "webhook_secret": m["secret"] + "x" * 32,
            },
        )
        assert r.status_code == 201, r.text
        assert m["secret"] not in r.text
    text = str(shown)
    assert m["casenote"] not in text  # notes are not part of the timeline
    assert m["pathwhy"] in text and m["authref"] in text  # the caseworker reads them back

    leaked = [name for name, value in m.items() if value in logs.getvalue()]
    assert logs.getvalue() and not leaked, f"in the logs: {leaked}"

    plain, histories, payloads = await raw_histories(stack, j.case_id)
    assert len(histories) >= 2 and payloads
    for where, data in histories.items():
        leaked = [name for name, value in m.items() if value.encode() in data]
        assert not leaked, f"in the history of {where}: {leaked}"
    assert all(p.metadata.get("encoding") == ENCODING for p in payloads if p.data)
    # Control: the markers are there, encrypted: the codec (with the case's key) finds them.
    decoded = b"".join(p.data for p in await EncryptionCodec(stack.keyring).decode(payloads))
    assert m["withdrawn"].encode() in decoded and m["tasknote"].encode() in decoded

    for wid in await workflow_ids(stack, j.case_id):
        description = await plain.get_workflow_handle(wid).describe()
        searchable = str(description.raw_description.workflow_execution_info.search_attributes) + str(
            description.raw_description.workflow_execution_info.memo
        )
        assert not [name for name, value in m.items() if value in searchable], wid

    everything = database_text(stack)
    assert j.case_id in everything  # the control: the case is there
    leaked = [name for name, value in m.items() if value in everything]
    assert not leaked, f"in the database: {leaked}"
    if stack.backend == "sqlite":
        leaked = leaks_in_files(Path(stack.settings.data_dir).glob("reintegration.db*"), m)
        assert not leaked, f"in the database files: {leaked}"


async def test_erasure_makes_the_data_unreadable_everywhere_and_keeps_the_statistics(stack):
    m = markers()
    j = await marked_journey(stack, m)
    admin = stack.auth("admin", "admin-1")
    _, _, payloads_before = await raw_histories(stack, j.case_id)
    summary_before = (await stack.http.get("/v1/supervision/summary", headers=j.supervisor)).json()

    # Not for a case still open, not by a caseworker or supervisor.
    other = Journey(stack)
    await other.open()
    r = await stack.http.delete(f"/v1/cases/{other.case_id}/personal-data", headers=admin)
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    for who in (j.cw, j.supervisor):
        assert (await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=who)).status_code == 403
    assert (await stack.http.delete(f"/v1/cases/{uuid.uuid4()}/personal-data", headers=admin)).status_code == 404

    # Read just before: the API keeps this version's opened view beside the case's key; so does
    # another API process (a keyring of its own), which the erasure cannot reach.
    seen = (await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw)).json()
    assert [name for name, value in m.items() if value in str(seen["timeline"])]
    elsewhere = Keyring(stack.engine, kek_from_settings(stack.settings))

    def read_elsewhere() -> str:
        with Session(stack.engine, info={"keyring": elsewhere}) as session:
            record = session.get(CaseRecord, j.case_id)
            return str(case_public(session, record, stack.settings).model_dump())

    assert [name for name, value in m.items() if value in read_elsewhere()]
    r = await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=admin)
    assert r.status_code == 200, r.text
    erased_at = r.json()["erased_at"]
    # The other process still holds the key for a while, but the erasure is a new version of the
    # case: what it kept is not served again.
    assert elsewhere.cached_case_key(j.case_id) is not None
    assert not [name for name, value in m.items() if value in read_elsewhere()]
    again = await stack.http.delete(f"/v1/cases/{j.case_id}/personal-data", headers=admin)
    assert again.status_code == 200 and again.json()["erased_at"] == erased_at

    # The API: no person, free text gone.
    case = (await stack.http.get(f"/v1/cases/{j.case_id}", headers=j.cw, params={"include": "person"})).json()
    assert case["person"] is None and case["version"] == seen["version"] + 1
    assert not [name for name, value in m.items() if value in str(case)]
    assert ERASED in str(case["timeline"])
    notes = await stack.http.get(f"/v1/cases/{j.case_id}/notes", headers=j.cw)
    assert notes.status_code == 200 and notes.json()["items"] == []  # the notes went with the key
    # The database: no person row, the key destroyed, and no marker anywhere.
    with Session(stack.engine) as session:
        assert session.get(PersonRecord, j.case_id) is None
        assert not session.exec(select(NoteRecord).where(NoteRecord.case_id == j.case_id)).all()
        key = session.exec(select(DataKeyRecord).where(DataKeyRecord.case_id == j.case_id)).one()[0]
        assert key.wrapped is None and key.destroyed_at is not None
        record = session.get(CaseRecord, j.case_id)
        assert (record.stage, record.status, record.pathway) == ("closed", "closed", "residence")
        assert session.exec(select(StageVisitRecord).where(StageVisitRecord.case_id == j.case_id)).all()
        assert session.exec(select(TaskRecord).where(TaskRecord.case_id == j.case_id)).all()
    assert not [name for name, value in m.items() if value in database_text(stack)]
    # The histories: their payloads no longer decrypt, in any process (a fresh keyring: no cache).
    fresh = Keyring(stack.engine, kek_from_settings(stack.settings))  # no cache, unlike the stack's
    case_payloads = [p for p in payloads_before if p.metadata.get("encryption-key-id") == key.key_id.encode()]
    assert case_payloads
    for payload in case_payloads[:20]:
        try:
            await EncryptionCodec(fresh).decode([payload])
        except KeyUnavailable:
            continue
        raise AssertionError("a payload of the erased case still decrypts")
    # The Web UI's codec endpoint gives them back still encrypted.
    body = json_format.MessageToJson(Payloads(payloads=case_payloads[:5]))
    r = await stack.http.post("/codec/decode", content=body, headers=j.supervisor)
    assert r.status_code == 200
    back = json_format.Parse(r.text, Payloads()).payloads
    assert all(p.metadata.get("encoding") == ENCODING for p in back)
    # Statistics intact: the case still counts.
    summary_after = (await stack.http.get("/v1/supervision/summary", headers=j.supervisor)).json()
    assert summary_after["total"] == summary_before["total"] + 1  # the other (open) case, not a loss
    assert summary_after["by_pathway"].get("residence", 0) >= 1


async def test_the_codec_endpoints_serve_the_web_ui_only_with_a_supervisor(stack):
    m = markers()
    j = Journey(stack)
    await j.open(first_name=m["first"])
    await j.step("risk-assessment", {"level": "low", "threats": [], "assessed_on": day(1)})
    await j.step("withdraw-consent", {"withdrawn_on": day(2), "notes": m["withdrawn"]})
    _, _, payloads = await raw_histories(stack, j.case_id)
    body = json_format.MessageToJson(Payloads(payloads=payloads))
    origin = stack.settings.temporal_ui_origins[0]

    r = await stack.http.post("/codec/decode", content=body, headers={**j.supervisor, "Origin": origin})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    decoded = json_format.Parse(r.text, Payloads()).payloads
    assert m["withdrawn"].encode() in b"".join(p.data for p in decoded)
    assert not any(p.metadata.get("encoding") == ENCODING for p in decoded)

    # A supervisor of another region gets the case's payloads back still encrypted.
    elsewhere = stack.auth("supervisor", "sup-ro", countries=["RO"])
    r = await stack.http.post("/codec/decode", content=body, headers=elsewhere)
    assert r.status_code == 200
    back = json_format.Parse(r.text, Payloads()).payloads
    assert back == list(payloads) and m["withdrawn"].encode() not in b"".join(p.data for p in back)
    # Each case read through the codec is in its audit trail.
    trail = (await stack.http.get(f"/v1/cases/{j.case_id}/audit", headers=j.supervisor)).json()["items"]
    assert any(e["action"] == "codec.decode" and e["actor"]["sub"] == "sup-1" for e in trail)
    assert not any(e["action"] == "codec.decode" and e["actor"]["sub"] == "sup-ro" for e in trail)
    # Hostile payloads: a key id that isn't one, bytes that aren't UTF-8, data too short: given back.
    odd = Payloads(
        payloads=[
            Payload(metadata={"encoding": ENCODING, "encryption-key-id": b"keyed-hash-1"}, data=b"x" * 40),
            Payload(metadata={"encoding": ENCODING, "encryption-key-id": b"\xff\xfe"}, data=b"x" * 40),
            Payload(
                metadata={"encoding": ENCODING, "encryption-key-id": payloads[0].metadata["encryption-key-id"]},
                data=b"short",
            ),
        ]
    )
    r = await stack.http.post("/codec/decode", content=json_format.MessageToJson(odd), headers=j.supervisor)
    assert r.status_code == 200 and json_format.Parse(r.text, Payloads()) == odd
    assert (await stack.http.post("/codec/decode", content=body)).status_code == 401
    assert (await stack.http.post("/codec/decode", content=body, headers=j.cw)).status_code == 403
    assert (await stack.http.post("/codec/decode", content="{not json", headers=j.supervisor)).status_code == 422
    # CORS: the UI's origin only.
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    ok = await stack.http.options("/codec/decode", headers=preflight)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin
    evil = await stack.http.options("/codec/decode", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in evil.headers
    api = await stack.http.get("/v1/agencies", headers={**j.cw, "Origin": origin})
    assert "access-control-allow-origin" not in api.headers  # the rest of the API is not for browsers

    # Nothing is encoded for the UI: a workflow would refuse it (tests/test_forged_commands.py).
    original = Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b'{"x": 1}')])
    r = await stack.http.post("/codec/encode", content=json_format.MessageToJson(original), headers=j.supervisor)
    assert r.status_code == 403 and "through the API" in r.json()["detail"]

    # The development Web UI's endpoint carries a codec token in its path (tests/test_run_stack.py
    # has `make run` make one): scoped like any supervisor's, good for the codec routes only.
    session = stack.settings.codec_session
    token = mint_codec(stack.settings, sub="temporal-web-ui:dev", countries=["*"], session=session)
    r = await stack.http.post(f"/codec/t/{token}/decode", content=body)
    assert r.status_code == 200
    assert m["withdrawn"].encode() in b"".join(p.data for p in json_format.Parse(r.text, Payloads()).payloads)
    trail = (await stack.http.get(f"/v1/cases/{j.case_id}/audit", headers=j.supervisor, params={"limit": 500})).json()
    assert any(e["action"] == "codec.decode" and e["actor"]["sub"] == "temporal-web-ui:dev" for e in trail["items"])
    romania = mint_codec(stack.settings, sub="temporal-web-ui:ro", countries=["RO"], session=session)
    r = await stack.http.post(f"/codec/t/{romania}/decode", content=body)
    assert m["withdrawn"].encode() not in b"".join(p.data for p in json_format.Parse(r.text, Payloads()).payloads)
    assert (await stack.http.get("/v1/cases", headers={"Authorization": f"Bearer {token}"})).status_code == 401
    for api_token in (stack.token("caseworker", "cw-es-1"), stack.token("supervisor", "sup-1")):
        assert (await stack.http.post(f"/codec/t/{api_token}/decode", content=body)).status_code == 401
    assert (await stack.http.post("/codec/t/not.a.token/decode", content=body)).status_code == 401


async def test_an_unexpected_error_answers_500_and_its_message_reaches_no_log(stack):
    """An exception's message can quote a value; it is answered as a problem and logged by type."""
    import logging

    import httpx

    from api.main import create_app
    from tests.conftest import served

    marker = markers()["first"]
    app = create_app(stack.settings)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError(f"a value that must not be logged: {marker}")

    # Served for real, with the server's own loggers reaching the root logger (as in a deployment
    # that collects them): the server logs whatever escapes the application, traceback and all.
    uvicorn_logger = logging.getLogger("uvicorn")
    propagate, uvicorn_logger.propagate = uvicorn_logger.propagate, True  # earlier servers configured it
    try:
        async with served(app, log_config=None, lifespan="on") as url:
            with tap() as logs:
                async with httpx.AsyncClient(base_url=url) as http:
                    r = await http.get("/v1/boom")
    finally:
        uvicorn_logger.propagate = propagate
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert marker not in r.text
    assert "RuntimeError" in logs.getvalue() and marker not in logs.getvalue()


async def test_marker_data_sent_through_the_pages_appears_nowhere_it_must_not(stack):
    """The workspace's forms carry the same personal data as the API: the person's identity, case
    notes, a partner's reasons. None of it may reach a URL, a log line or a workflow history."""
    m = markers()
    urls: list[str] = []

    async def remember(response: httpx.Response) -> None:
        urls.append(str(response.request.url))
        urls.append(response.headers.get("location", ""))

    with tap() as logs:
        person = await caseworker(stack)
        partner = await Person(stack).sign_in("partner", "clinic-web", agency="clinic-es")
        person.http.event_hooks["response"].append(remember)
        partner.http.event_hooks["response"].append(remember)
        try:
            opened = await send_form(
                person,
                "/workspace/cases/new",
                "/workspace/cases/new",
                intake(m["first"], **{"person.second_name": m["second"], "identification.place": m["place"]}),
            )
            case_id = case_id_of(opened)
            case_page = f"/workspace/cases/{case_id}"
            step = f"{case_page}/steps/risk-assessment"
            r = await send_form(person, step, step, {"level": "low", "threats": m["threat"], "assessed_on": day(1)})
            assert r.status_code == 303, r.text[:2000]
            r = await send_form(
                person,
                case_page,
                f"{case_page}/tasks",
                {"service": "medical", "agency_id": "clinic-es", "notes": m["tasknote"]},
            )
            assert r.status_code == 303, r.text[:2000]
            task_id = (
                await stack.http.get(f"/v1/cases/{case_id}", headers=stack.auth("caseworker", "cw-es-1"))
            ).json()["open_tasks"][0]["task_id"]
            seen = await partner.page(f"/workspace/inbox/{task_id}")
            assert m["first"] in seen and m["tasknote"] in seen  # control: the agency needs them, and sees them
            decline = f"/workspace/inbox/{task_id}/decline"
            r = await send_partner_form(partner, f"/workspace/inbox/{task_id}", decline, {"reason": m["declined"]})
            assert r.status_code == 303, r.text[:2000]
            shown = await person.page(f"{case_page}?include=person")
            assert m["first"] in shown, "control: the caseworker reads the person back"
        finally:
            await person.aclose()
            await partner.aclose()

    assert urls and not [name for name, value in m.items() if any(value in url for url in urls)]
    leaked = [name for name, value in m.items() if value in logs.getvalue()]
    assert logs.getvalue() and not leaked, f"in the logs: {leaked}"
    _, histories, _ = await raw_histories(stack, case_id)
    for where, data in histories.items():
        leaked = [name for name, value in m.items() if value.encode() in data]
        assert not leaked, f"in the history of {where}: {leaked}"
