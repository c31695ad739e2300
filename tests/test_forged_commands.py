"""Security review, finding 2: no forged commands through Temporal.

Someone who reaches the Temporal frontend can send an update or start a workflow with a payload of
their own. The worker decodes only payloads sealed with the key of the case the workflow names, so
such a command is refused before the workflow sees it; and the workflow checks for itself what the
API checks (the agency offers the service in the country where it is needed, the actor's role), so
a command sealed correctly but not sent by the API is held to the same rules.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format
from sqlmodel import Session, select
from temporalio.api.common.v1 import Payloads, WorkflowExecution
from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage
from temporalio.api.update.v1 import Input, Meta, Request, WaitPolicy
from temporalio.api.workflowservice.v1 import UpdateWorkflowExecutionRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from reintegration.codec import UNSEALED, EncryptionCodec
from reintegration.db import CaseRecord, TaskRecord
from reintegration.settings import Settings
from reintegration.temporal import client_options
from tests.journey import Journey, day
from workflows import ids
from workflows.case import CaseRun, CaseWorkflow
from workflows.model import Actor, CaseOpening, Role, TaskAction, TaskCommand


def bare_client(stack) -> Client:
    """What an attacker at the frontend has: a client without the key-encryption key."""
    return Client(
        stack.client.service_client, namespace=stack.settings.temporal_namespace, data_converter=pydantic_data_converter
    )


def bound(command: TaskCommand, update_id: str, *, issued_at: datetime | None = None) -> TaskCommand:
    """A command as the API sends it: bound to its update id, stamped with when it was issued."""
    return command.model_copy(update={"update_id": update_id, "issued_at": issued_at or datetime.now(UTC)})


def forged_assignment(
    agency: str = "shelter-es", *, role: Role = Role.caseworker, actor_agency: str | None = None
) -> TaskCommand:
    return TaskCommand(
        action=TaskAction.assign,
        body={"service": "shelter", "agency_id": agency},
        actor=Actor(sub="cw-es-1", role=role, agency=actor_agency),
    )


def forged_opening(case_id: str, reference: str) -> CaseOpening:
    return CaseOpening(
        case_id=case_id,
        reference=reference,
        owner_country="ES",
        owner_caseworker="cw-es-1",
        origin_country="RO",
        identified_on=day(0),
        is_minor=False,
        opened_by=Actor(sub="cw-es-1", role=Role.caseworker),
    )


async def tasks_of(stack, case_id: str) -> list[TaskRecord]:
    with Session(stack.engine) as session:
        return list(session.exec(select(TaskRecord).where(TaskRecord.case_id == case_id)).all())


def cause_of(exc: BaseException) -> BaseException:
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[attr-defined]
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


async def test_an_update_sent_without_the_case_key_is_refused_and_changes_nothing(stack):
    j = Journey(stack)
    await j.open()
    before = (await j.get())["version"]
    handle = bare_client(stack).get_workflow_handle(ids.workflow_id(j.case_id))
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("task", forged_assignment())
    cause = cause_of(refused.value)  # its message is sealed too: the sender learns the type only
    assert isinstance(cause, ApplicationError) and cause.type == UNSEALED
    after = await j.get()
    assert after["version"] == before and after["open_tasks"] == []
    assert await tasks_of(stack, j.case_id) == []
    # A command the API sends still works on the same workflow.
    await j.assign("shelter", "shelter-es")


async def test_a_payload_sealed_with_the_system_key_is_refused_too(stack):
    """The Web UI's codec encodes nothing any more (403), and a payload sealed with the system key,
    as it used to, is no way into a case either."""
    j = Journey(stack)
    await j.open()
    plain = pydantic_data_converter.payload_converter.to_payloads([bound(forged_assignment(), "by-ui")])
    r = await stack.http.post(
        "/codec/encode", content=json_format.MessageToJson(Payloads(payloads=plain)), headers=j.supervisor
    )
    assert r.status_code == 403
    sealed = await EncryptionCodec(stack.keyring).encode(plain)  # no context: the system key
    assert sealed[0].metadata["encryption-key-id"] == b"system-1"
    request = UpdateWorkflowExecutionRequest(
        namespace=stack.settings.temporal_namespace,
        workflow_execution=WorkflowExecution(workflow_id=ids.workflow_id(j.case_id)),
        request=Request(
            meta=Meta(update_id="by-ui", identity="attacker"), input=Input(name="task", args=Payloads(payloads=sealed))
        ),
        wait_policy=WaitPolicy(
            lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED
        ),
    )
    response = await bare_client(stack).workflow_service.update_workflow_execution(request)
    assert response.outcome.HasField("failure")
    assert response.outcome.failure.application_failure_info.type == UNSEALED
    assert await tasks_of(stack, j.case_id) == []


async def test_a_case_workflow_started_without_the_key_fails_and_reaches_no_table(stack):
    case_id = str(uuid.uuid4())
    opening = forged_opening(case_id, "ES-2026-FORGED")
    handle = await bare_client(stack).start_workflow(
        CaseWorkflow.run,
        CaseRun(opening=opening),
        id=ids.workflow_id(case_id),
        task_queue=stack.settings.temporal_task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = cause_of(failed.value)
    assert isinstance(cause, ApplicationError) and cause.type == UNSEALED
    with Session(stack.engine) as session:
        assert session.get(CaseRecord, case_id) is None


async def test_a_workflow_whose_id_names_no_case_cannot_act_for_one(stack):
    """Sealed with the system key (the Web UI can make such payloads), under an id of no case."""
    case_id = str(uuid.uuid4())
    opening = forged_opening(case_id, "ES-2026-NOCASE")
    handle = await stack.client.start_workflow(
        CaseWorkflow.run,
        CaseRun(opening=opening),
        id=f"not-a-case-{uuid.uuid4().hex}",
        task_queue=stack.settings.temporal_task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = cause_of(failed.value)
    assert isinstance(cause, ApplicationError) and cause.type == "WrongCase"
    with Session(stack.engine) as session:
        assert session.get(CaseRecord, case_id) is None


@pytest.mark.parametrize(
    "agency, why",
    [
        ("reintegration-partner-ro", "reintegration-partner-ro does not offer shelter"),
        ("no-such-agency", "unknown agency: no-such-agency"),
    ],
)
async def test_the_workflow_checks_the_agency_whoever_sealed_the_command(stack, agency, why):
    """A holder of the key (a process of ours, say, with a bug) bypassing the API's checks."""
    j = Journey(stack)
    await j.open()
    handle = stack.client.get_workflow_handle(ids.workflow_id(j.case_id))
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("task", bound(forged_assignment(agency), "u-1"), id="u-1")
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidCommand" and cause.message == why
    assert await tasks_of(stack, j.case_id) == []
    assert (await j.get())["version"] == j.case["version"]


async def test_the_workflow_checks_the_agencys_country(stack):
    """A Romanian office's service for a case in Spain: the agency offers it, but in the wrong country."""
    j = Journey(stack)
    await j.open()
    command = TaskCommand(
        action=TaskAction.assign,
        body={"service": "medical", "agency_id": "reintegration-partner-ro"},
        actor=Actor(sub="cw-es-1", role=Role.caseworker),
    )
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await stack.client.get_workflow_handle(ids.workflow_id(j.case_id)).execute_update(
            "task", bound(command, "u-2"), id="u-2"
        )
    assert refused.value.cause.message == "reintegration-partner-ro works in RO; medical is needed in ES"


async def test_the_workflow_checks_the_actors_role(stack):
    j = Journey(stack)
    await j.open()
    command = bound(forged_assignment(role=Role.partner, actor_agency="shelter-es"), "u-3")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await stack.client.get_workflow_handle(ids.workflow_id(j.case_id)).execute_update("task", command, id="u-3")
    assert refused.value.cause.type == "Forbidden"
    assert await tasks_of(stack, j.case_id) == []


def test_temporal_takes_mtls_or_an_api_key_from_files(tmp_path):
    """Production reaches the frontend only authenticated: the settings take both ways (from files)."""
    for name, text in (("ca.pem", "CA"), ("client.pem", "CERT"), ("client.key", "KEY"), ("api-key", "k-123\n")):
        (tmp_path / name).write_text(text)
    mtls = Settings(
        temporal_tls_ca_file=tmp_path / "ca.pem",
        temporal_tls_cert_file=tmp_path / "client.pem",
        temporal_tls_key_file=tmp_path / "client.key",
        temporal_tls_server_name="temporal.internal",
    )
    tls = client_options(mtls)["tls"]
    assert (tls.server_root_ca_cert, tls.client_cert, tls.client_private_key, tls.domain) == (
        b"CA",
        b"CERT",
        b"KEY",
        "temporal.internal",
    )
    assert mtls.temporal_authenticated
    keyed = Settings(temporal_api_key_file=tmp_path / "api-key")
    assert client_options(keyed) == {"api_key": "k-123", "tls": True} and keyed.temporal_authenticated
    assert client_options(Settings()) == {} and not Settings().temporal_authenticated
    with pytest.raises(ValueError, match="go together"):
        Settings(temporal_tls_cert_file=tmp_path / "client.pem")


async def test_a_sealed_command_copied_from_a_history_is_refused(stack):
    """Sealing says who made a command, not that it is new: a copy of one the API sent (read out of
    the history by someone at the frontend) under another update id, or a stale one, is refused."""
    j = Journey(stack)
    await j.open()
    first = await j.assign("shelter", "shelter-es")
    assert first["status"] == "assigned"
    handle = stack.client.get_workflow_handle(ids.workflow_id(j.case_id))
    sent = bound(forged_assignment(), "sent-by-the-api")
    for copy, update_id in (
        (sent, "another-id"),
        (bound(forged_assignment(), "old", issued_at=datetime.now(UTC) - timedelta(hours=1)), "old"),
    ):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("task", copy, id=update_id)
        assert refused.value.cause.type == "UnboundCommand"
    assert len(await tasks_of(stack, j.case_id)) == 1
    # The same command, bound and fresh, goes through: the check is on the binding, not the content.
    await handle.execute_update("task", sent, id="sent-by-the-api")
    assert len(await tasks_of(stack, j.case_id)) == 2
