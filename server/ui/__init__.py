"""The web page at `/ui`: server-rendered shells whose scripts talk to the JSON and SSE API.

The pages hold no data of their own: each script reads the API with the caller's API key
(asked for once when the API answers 401, and kept in the tab's session storage), so a
page shows exactly what the key may see. Every asset is served from `static/`: no build
step, nothing fetched from elsewhere, so the page works offline.
"""

from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from server.schemas import MAX_THREAD_ID_CHARS, THREAD_ID_PATTERN

HERE = Path(__file__).parent
STATIC = HERE / "static"
MEDIA_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
router = APIRouter(prefix="/ui", include_in_schema=False)

ThreadId = Annotated[
    str, PathParam(min_length=1, max_length=MAX_THREAD_ID_CHARS, pattern=THREAD_ID_PATTERN)
]
AssetName = Annotated[str, PathParam(pattern=r"^[a-z0-9_-]+\.(css|js|svg)$")]


@cache
def _templates() -> Jinja2Templates:
    return Jinja2Templates(directory=HERE / "templates")


def _page(request: Request, template: str, **context: object) -> HTMLResponse:
    return _templates().TemplateResponse(request, template, context)


@router.get("")
async def home() -> RedirectResponse:
    """The runs list is the home page."""
    return RedirectResponse("/ui/runs", status_code=307)


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request) -> HTMLResponse:
    """Recent threads, filterable by status."""
    return _page(request, "runs.html", page="runs", title="Runs")


@router.get("/threads/{thread_id}", response_class=HTMLResponse)
async def thread_page(request: Request, thread_id: ThreadId) -> HTMLResponse:
    """One thread: its plan as a graph, live steps, results, verdict, report, plan history."""
    return _page(request, "thread.html", page="runs", title="Thread", thread_id=thread_id)


@router.get("/approvals", response_class=HTMLResponse)
async def approvals_page(request: Request) -> HTMLResponse:
    """Every thread waiting for a person, longest waiting first."""
    return _page(request, "approvals.html", page="approvals", title="Approvals")


@router.get("/new", response_class=HTMLResponse)
async def new_run_page(request: Request) -> HTMLResponse:
    """The form that starts a run."""
    return _page(request, "new.html", page="new", title="Start a run")


@router.get("/static/{name}")
async def asset(name: AssetName) -> Response:
    """A stylesheet, script or image of the page."""
    path = STATIC / name
    if not path.is_file():
        raise HTTPException(404, f"no asset {name!r}")
    return FileResponse(
        path, media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"}
    )
