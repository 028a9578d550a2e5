"""``GET /``: the live dashboard, one static page that reads the API."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from starlette.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

_PAGE = files("conveyor.api").joinpath("dashboard/index.html")


@router.get("/")
async def dashboard() -> HTMLResponse:
    return HTMLResponse(_PAGE.read_text(encoding="utf-8"), headers={"cache-control": "no-cache"})
