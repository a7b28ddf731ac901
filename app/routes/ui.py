"""GET /: the chat page, and its static files under /static (served from app/static, offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The page loads only its own files and talks only to this service; answers are model output,
# so no remote images or scripts may sneak in through the rendered Markdown.
_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        # The cited PDF opens from a blob: URL the page made of a file it fetched; that tab
        # inherits this policy, and Chromium's viewer is a plugin: without this it is blank.
        "object-src blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(tags=["ui"])
# StaticFiles does the careful parts (path checks, ETag/304, content types); the routes below
# only hand it the path, so the page needs one `include_router` and no mount.
_files = StaticFiles(directory=STATIC_DIR)


async def _serve(path: str, request: Request, headers: dict[str, str]) -> Response:
    response = await _files.get_response(path, request.scope)
    # Revalidate every time (cheap 304s) so a new release's page never runs with old scripts.
    response.headers["Cache-Control"] = "no-cache"
    response.headers.update(headers)
    return response


@router.get("/", include_in_schema=False)
async def chat_page(request: Request) -> Response:
    return await _serve("index.html", request, _PAGE_HEADERS)


@router.get("/static/{path:path}", include_in_schema=False)
async def static_file(path: str, request: Request) -> Response:
    return await _serve(path, request, {"X-Content-Type-Options": "nosniff"})
