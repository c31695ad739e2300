"""The partner agencies, as ``GET /v1/agencies`` shows them to the signed-in person (everyone may
read the registry; an admin sees the webhook addresses too). An admin's home in the workspace:
changes to the registry and erasures are made through the API, where they are audited."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.agencies import list_agencies
from api.web.context import WebDep

router = APIRouter(include_in_schema=False)


@router.get("/workspace/agencies")
def agencies(web: WebDep) -> HTMLResponse:
    return web.render("agencies.html", {"agencies": list_agencies(user=web.user, session=web.session)})
