"""Each step's page: the form built from that step's body model (``workflows.rules.STEPS``),
sent as ``POST /v1/cases/{id}/steps/{step}`` is (``_record``, with the case's version the form was
drawn from as ``If-Match``), and its refusals explained in words (409 with the steps that are
possible, 412 with the case as it is now, 422 beside the fields, 503 to try again).

The monitoring step asks the sustainability survey's questions in a form of its own
(``api.web.survey_form``), sent as the same body."""

from __future__ import annotations

import re
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Response
from fastapi.responses import HTMLResponse

from api.cases import CaseId
from api.errors import ApiProblem, Forbidden, NotFound
from api.steps import _record
from api.web import forms, survey_form
from api.web.case_view import (
    CaseView,
    case_path,
    case_view,
    stage_bar,
    step_options,
    timeline,
)
from api.web.context import PostedForm, Web, WebDep
from api.web.forms import PostForm, Raw
from api.web.refusals import Notice, Refusal, explain, form_key, not_now, refusal_in, refused_page, see
from workflows import rules
from workflows.model import (
    Step,
    Strict,
)
from workflows.rules.base import StepRule

router = APIRouter(include_in_schema=False)

# Blank fieldsets a list (a plan's measures or services) gets when the person asks for more rows.
MORE_ROWS = 3
# A case's version as a form carries it (sent back as If-Match).
VERSION = re.compile(r"[0-9]{1,12}")


def step_rule(web: Web, step: str) -> StepRule:
    """The step's rule; 404 for no such step, 403 for a step of another role (as the API)."""
    if step not in {s.value for s in Step}:
        raise NotFound("no such step")
    rule = rules.STEPS[Step(step)]
    if web.user.role not in rule.roles:
        raise Forbidden(f"a {web.user.role.value} may not record {step}")
    return rule


@router.get("/workspace/cases/{case_id}/steps/{step}")
def step_page(case_id: CaseId, step: Annotated[str, Path(max_length=40)], web: WebDep) -> HTMLResponse:
    """The step's form, built from its body's model (the one the API validates)."""
    try:
        rule = step_rule(web, step)
        view = case_view(web, case_id)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    if not view.owner:  # another office reads the case; its steps are the managing office's (as the API: 404)
        return refused_page(web, 404)
    form = step_form(rule, web._, options=step_options(view, rule.step, web._))
    notice = None
    if step not in view.case.allowed_steps:
        notice = not_now(web, view.case.allowed_steps)
    return render_step(web, view, rule, PostForm(step_path(case_id, step), form), view.case.version, notice=notice)


def step_path(case_id: str, step: str) -> str:
    return f"{case_path(case_id)}/steps/{step}"


@router.post("/workspace/cases/{case_id}/steps/{step}")
async def record_step(
    case_id: CaseId, step: Annotated[str, Path(max_length=40)], web: WebDep, posted: PostedForm
) -> Response:
    """The step's form, sent as ``POST /v1/cases/{id}/steps/{step}`` is (``_record``), with the
    case's version the form was drawn from as ``If-Match``."""
    key = form_key(posted)
    version = _first(posted, "version")
    try:
        rule = step_rule(web, step)
        if _first(posted, "more"):  # "more rows": the form again, longer; nothing is sent (nor needs Temporal)
            view = await anyio.to_thread.run_sync(case_view, web, case_id)
            if not view.owner:  # another office reads the case only: no step form (as the API: 404)
                return refused_page(web, 404)
            options = step_options(view, rule.step, web._)
            form = step_form(rule, web._, raw=posted, options=options, more=MORE_ROWS)
            return render_step(web, view, rule, PostForm(step_path(case_id, step), form, key), _version(version, view))
        p = web.pipeline(key)
    except ApiProblem as problem:
        return refused_page(web, problem.status)
    body, errors = check_step_form(rule, web._, posted)
    refusal = None
    if body is not None:
        if_match = f'W/"{version}"' if VERSION.fullmatch(version) else None
        try:
            refusal = refusal_in(await _record(p, rule.step, case_id, body, Response(), if_match))
        except ApiProblem as problem:
            refusal = Refusal.of(problem)
        if refusal is None:
            return see(case_path(case_id), done=step)
    try:
        view = await p.db(case_view, web, case_id)
    except (NotFound, Forbidden) as problem:
        return refused_page(web, problem.status)
    form = step_form(rule, web._, raw=posted, options=step_options(view, rule.step, web._), errors=errors)
    action = step_path(case_id, step)
    if refusal is None:
        return render_step(web, view, rule, PostForm(action, form, key), _version(version, view), status=422)
    if refusal.status in (403, 404):
        return refused_page(web, refusal.status)
    notice, key = explain(web, refusal, key)
    if refusal.status == 409:
        notice = not_now(web, refusal.allowed_steps or view.case.allowed_steps)
        notice.detail = web.detail(refusal.detail)
    shown = view.case.version if refusal.status == 412 else _version(version, view)
    return render_step(
        web,
        view,
        rule,
        PostForm(action, form, key),
        shown,
        notice=notice,
        status=refusal.status,
        changed=refusal.status == 412,
    )


def step_form(
    rule: StepRule,
    _: forms.Translate,
    *,
    raw: Raw | None = None,
    options: dict[str, forms.Options] | None = None,
    errors: forms.Errors | None = None,
    more: int = 0,
) -> forms.Form:
    """The step's form: its body's model's, or the survey's for the monitoring step."""
    if rule.step == Step.monitoring:
        return survey_form.build(_, raw=raw, errors=errors)
    return forms.build(rule.body, _, raw=raw, options=options, errors=errors, more=more)


def check_step_form(rule: StepRule, _: forms.Translate, posted: Raw) -> tuple[Strict | None, forms.Errors]:
    """The posted form as the step's body, or None and what is wrong (``step_form``'s pair)."""
    if rule.step == Step.monitoring:
        return survey_form.check(_, posted)
    return forms.check(rule.body, _, posted)


def _first(posted: Raw, name: str) -> str:
    value = posted.get(name)
    return value if isinstance(value, str) else ""


def _version(sent: str, view: CaseView) -> int:
    """The version the form was drawn from (kept, so that a change meanwhile still gives 412)."""
    return int(sent) if VERSION.fullmatch(sent) else view.case.version


def render_step(
    web: Web,
    view: CaseView,
    rule: StepRule,
    form: PostForm,
    version: int,
    *,
    notice: Notice | None = None,
    status: int = 200,
    changed: bool = False,
) -> HTMLResponse:
    step = rule.step.value
    possible = step in view.case.allowed_steps
    return web.render(
        "step.html",
        {
            "case": view.case,
            "step": step,
            "post": form,
            "version": version,
            "notice": notice,
            "show_form": possible,
            "withdraw": rule.step == Step.withdraw_consent,
            "changed": changed,
            "recent": timeline(web, view.case)[:5] if changed else [],
            "stages": stage_bar(view.case),
        },
        status=status,
    )
