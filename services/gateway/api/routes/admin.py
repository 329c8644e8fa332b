"""The admin KPI page: ``GET /mcp/v1/admin/dashboard``, HTML for browsers and the same data as JSON for
``Accept: application/json`` (the page polls that; so does ``goblin top``).

Who may read it: an admin (role ``admin`` with a credential holding the ``admin`` scope), the one rule
of services.common.scopes. Admins are the platform's operators here, not a tenant's: auth lets them
list and create every tenant and the router shows them every tenant's books, so the KPIs are global
(every tenant), as Prometheus's counters are. A non-admin gets 403, an admin's narrower key too.

How a browser authenticates: a bearer header cannot be typed into an address bar, so the page takes
the credential once in a sign-in form (an admin API key, or an access token from ``/auth/login``) and
keeps it in a cookie the page's scripts cannot read: ``HttpOnly; Secure; SameSite=Strict``, scoped to
``/mcp/v1/admin`` and to 8 hours. Only this area reads that cookie; every other route still wants the
bearer header. The credential is checked by auth on every use like a bearer one (a revoked key stops
working within the gateway's auth cache TTL), SameSite=Strict keeps other sites' pages from riding on
it, and the sign-in and sign-out posts also refuse a foreign ``Origin``. Scripts (curl, goblin top) send
``Authorization: Bearer`` as everywhere else.
"""

from __future__ import annotations

import html
import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from goblin.v1 import auth_pb2
from services.common import scopes
from services.gateway.deps import authenticate, gateway_state, principal_context
from services.gateway.errors import ApiError
from services.gateway.kpi_sources import KpiCollector

router = APIRouter(tags=["admin"])

DASHBOARD_PATH = "/mcp/v1/admin/dashboard"
SESSION_PATH = "/mcp/v1/admin/session"
COOKIE = "__Secure-goblin_admin"
COOKIE_PATH = "/mcp/v1/admin"
COOKIE_MAX_AGE_S = 8 * 3600
MAX_CREDENTIAL_CHARS = 4096
STATIC = Path(__file__).resolve().parents[2] / "static"
NO_STORE = {"Cache-Control": "no-store", "Vary": "Accept, Cookie, Authorization"}


@lru_cache(maxsize=4)
def template(name: str) -> str:
    """A page of ``services/gateway/static``, read once."""
    return (STATIC / name).read_text(encoding="utf-8")


def page_csp(nonce: str) -> str:
    """Nothing from anywhere else; only this response's own inline script and style run; the page may
    fetch its own JSON and post its forms to itself, and cannot be framed."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def render(name: str, status_code: int, values: dict[str, str] | None = None) -> HTMLResponse:
    """A static page with a fresh nonce, its ``{{ key }}`` slots filled with ``values`` (already escaped
    for where each slot sits)."""
    nonce = secrets.token_urlsafe(18)
    body = template(name).replace("{{ nonce }}", nonce)
    for key, value in (values or {}).items():
        body = body.replace("{{ " + key + " }}", value)
    headers = {**NO_STORE, "Content-Security-Policy": page_csp(nonce)}
    return HTMLResponse(body, status_code=status_code, headers=headers)


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` element: no ``</script>``, no ``<!--``."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def sign_in_page(status_code: int, message: str) -> HTMLResponse:
    """The sign-in form, with ``message`` (escaped) above it."""
    return render("admin_signin.html", status_code, {"message": html.escape(message)})


def wants_json(request: Request) -> bool:
    """JSON when the client asks for it and not for HTML (a browser's navigation asks for HTML)."""
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


def presented_credential(request: Request) -> tuple[str, str] | None:
    """(credential, where) from ``Authorization: Bearer`` first, else this area's cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if header:
        if scheme.lower() != "bearer" or not credential.strip():
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <admin API key or access token>'")
        return credential.strip(), "header"
    cookie = request.cookies.get(COOKIE, "")
    return (cookie, "cookie") if cookie else None


async def admin_principal(request: Request, credential: str) -> auth_pb2.Principal:
    """The verified admin behind ``credential``: 401 if auth does not know it, 403 unless admin."""
    if len(credential) > MAX_CREDENTIAL_CHARS:
        raise ApiError(401, "unauthorized", "invalid credential")
    principal = await authenticate(request, gateway_state(request), credential)
    if not scopes.is_admin(principal.role, principal.scopes):
        raise ApiError(403, "forbidden", "admin only (role admin with the 'admin' scope)")
    return principal


def same_origin(request: Request) -> bool:
    """A post from a page of this gateway, or from a client that is not a browser. Browsers say where a
    request comes from in ``Sec-Fetch-Site``; ``Origin`` is the fallback for those that do not (the
    pages' ``no-referrer`` policy makes a browser send ``Origin: null`` for their own forms, so it cannot
    be the main test)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"https://{host}", f"http://{host}")


def collector(request: Request) -> KpiCollector:
    """This app's collector, made on first use (it keeps the readings rates are measured between)."""
    app_state = request.app.state
    existing = getattr(app_state, "kpi_collector", None)
    if existing is None:
        existing = app_state.kpi_collector = KpiCollector(gateway_state(request))
    return existing


async def dashboard_viewer(request: Request) -> auth_pb2.Principal | Response:
    """The admin asking, or (a browser without a usable credential) the sign-in page to answer with."""
    presented = presented_credential(request)
    browser = not wants_json(request)
    if presented is None:
        if browser:
            return sign_in_page(401, "")
        raise ApiError(401, "unauthorized", "admin credential required", headers={"WWW-Authenticate": "Bearer"})
    credential, where = presented
    try:
        return await admin_principal(request, credential)
    except ApiError as error:
        if browser and where == "cookie" and error.status_code == 401:
            page = sign_in_page(401, "Your session has ended: sign in again.")
            page.delete_cookie(COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
            return page
        raise


ViewerDep = Annotated[auth_pb2.Principal | Response, Depends(dashboard_viewer)]


@router.get(DASHBOARD_PATH, summary="Admin KPI page (HTML; JSON with Accept: application/json)")
async def dashboard(request: Request, viewer: ViewerDep) -> Response:
    """The KPIs against the design notes' thresholds, service health, providers and breakers, budgets,
    the inference queue and security counts: HTML for browsers, JSON for ``Accept: application/json``."""
    if isinstance(viewer, Response):
        return viewer
    document = await collector(request).document(principal_context(viewer, request), viewer)
    if wants_json(request):
        return JSONResponse(document, headers=NO_STORE)
    return render("admin_dashboard.html", 200, {"data": script_json(document)})


@router.post(SESSION_PATH, summary="Sign the admin page in: a credential in a form, kept in a cookie")
async def sign_in(request: Request, credential: Annotated[str, Form(max_length=MAX_CREDENTIAL_CHARS)] = "") -> Response:
    """Checks the credential is an admin's, then sets the page's cookie and goes to the dashboard."""
    if not same_origin(request):
        raise ApiError(403, "forbidden", "cross-site sign-in refused")
    credential = credential.strip()
    # A browser's form (it asks for HTML) gets the form again with the reason; anything else gets the
    # JSON error every other route answers.
    browser = "text/html" in request.headers.get("accept", "").lower()
    if not credential:
        if browser:
            return sign_in_page(400, "Paste an admin API key or access token.")
        raise ApiError(400, "invalid_request", "credential is required")
    try:
        await admin_principal(request, credential)
    except ApiError as error:
        if browser and error.status_code in (401, 403):
            return sign_in_page(error.status_code, error.message)
        raise
    response = RedirectResponse(DASHBOARD_PATH, status_code=303, headers=NO_STORE)
    response.set_cookie(
        COOKIE, credential, max_age=COOKIE_MAX_AGE_S, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict"
    )
    return response


@router.post(f"{SESSION_PATH}/end", summary="Sign the admin page out (forget the cookie)")
async def sign_out(request: Request) -> Response:
    """Clears the cookie and shows the sign-in form; the credential itself stays valid (revoke the key
    through /auth/api-keys to end it everywhere)."""
    if not same_origin(request):
        raise ApiError(403, "forbidden", "cross-site sign-out refused")
    response = RedirectResponse(DASHBOARD_PATH, status_code=303, headers=NO_STORE)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
    return response
