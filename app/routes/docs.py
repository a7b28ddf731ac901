"""GET /docs (Swagger UI) and /redoc (ReDoc) from assets this service serves itself: they work
on a machine without internet (FastAPI's own pages load them from a CDN)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

# Vendored from npm into app/static/vendor/ (versions and licences:
# app/static/THIRD_PARTY_LICENSES.txt), served by the chat page's /static route (app/routes/ui.py).
VENDOR = "/static/vendor"
SWAGGER_JS = f"{VENDOR}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = f"{VENDOR}/swagger-ui/swagger-ui.css"
REDOC_JS = f"{VENDOR}/redoc/redoc.standalone.js"
FAVICON = f"{VENDOR}/swagger-ui/favicon-32x32.png"

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

# Everything from this origin: the pages' own inline bootstrap and styles (FastAPI's HTML,
# ReDoc's styled-components), ReDoc's search worker (a blob), and nothing from elsewhere. ReDoc
# draws its sidebar badge from cdn.redoc.ly: on an air-gapped machine the browser must not
# even try (the badge's text and link stay).
_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}

router = APIRouter(tags=["docs"])


def _own_origin(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(_HEADERS)
    return page


def _root(request: Request) -> str:
    """The path prefix a reverse proxy serves us under (uvicorn's --root-path), as FastAPI's
    own docs pages use it."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


@router.get(DOCS_URL, include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    root = _root(request)
    return _own_origin(
        get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=root + SWAGGER_JS,
            swagger_css_url=root + SWAGGER_CSS,
            swagger_favicon_url=root + FAVICON,
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
    )


@router.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return _own_origin(get_swagger_ui_oauth2_redirect_html())


@router.get(REDOC_URL, include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    app = request.app
    root = _root(request)
    return _own_origin(
        get_redoc_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=root + REDOC_JS,
            redoc_favicon_url=root + FAVICON,
            with_google_fonts=False,
        )
    )
