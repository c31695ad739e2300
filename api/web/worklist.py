"""My work: what waits on a caseworker, a partner or a supervisor, overdue first, each item saying
why in words and linking to where it is done.

The same list as ``GET /v1/me/worklist``: ``api.worklist.worklist_of`` for the signed-in person (the
same scope, the same order, the same rule of overdue). An admin has no worklist: the page refuses
them as the API does.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.journeys import utcnow
from api.web import words
from api.web.context import Web, WebDep
from api.worklist import WHY, WorkItem, worklist_of
from workflows.model import Role

router = APIRouter(include_in_schema=False)

WORKERS = (Role.caseworker, Role.partner, Role.supervisor)
SHOWN = 100  # the most urgent items shown; how many more there are is said


@dataclass
class Row:
    """An item of the worklist with its reason in the person's language."""

    item: WorkItem
    why: str


def sentence(text: str) -> str:
    """A reason (written to stand inside a sentence, as the API gives it) as a sentence of its own."""
    return text[:1].upper() + text[1:]


def _row(web: Web, item: WorkItem) -> Row:
    return Row(item=item, why=sentence(web._(WHY[item.why])))


@router.get("/workspace/worklist")
def my_work(web: WebDep) -> HTMLResponse:
    """Everything waiting on the person, the overdue first (marked), then the soonest due."""
    if (refusal := words.only_for(web, *WORKERS)) is not None:
        return refusal
    items = worklist_of(web.session, web.user, utcnow())
    return web.render(
        "worklist.html",
        {
            "rows": [_row(web, i) for i in items[:SHOWN]],
            "total": len(items),
            "overdue": sum(1 for i in items if i.overdue),
            "more": max(0, len(items) - SHOWN),
        },
    )
