"""The console's ASGI application: the API behind the access rule, the pages, the assets."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console.api import Api, Backend, error
from console.auth import allowed
from infra.errors import StoreUnavailable
from orchestrator.store import SagaQuery

STATIC = Path(__file__).parent / "static"
# The pages are shells: their script reads the API (so they hold no data themselves).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Guard(BaseHTTPMiddleware):
    """The access rule (console.auth) on every API request; security headers on all."""

    def __init__(self, app: object, token: str | None) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self._token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.startswith("/api/"):
            client = request.client.host if request.client else None
            if not allowed(request.method, client, request.headers.get("authorization"),
                           self._token):
                response: Response = error(401, "this needs Authorization: Bearer "
                                                "<SAGA_CONSOLE_TOKEN>")
                response.headers["WWW-Authenticate"] = 'Bearer realm="saga console"'
                return response
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


async def _store_down(request: Request, exc: Exception) -> Response:
    return error(503, f"the saga store does not answer: {exc}")


def page(path: str, name: str) -> Route:
    """A page shell from static/."""
    async def serve(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type="text/html")
    return Route(path, serve)


def build(backend: Backend, token: str | None) -> Starlette:
    """The application, wired to ``backend``."""
    api = Api(backend)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        # One indexed read: the store answers (a console that cannot read is not ready).
        await backend.sagas.search(SagaQuery(limit=1))
        return PlainTextResponse("ready\n")

    return Starlette(
        routes=[*api.routes(), Route("/healthz", healthz), Route("/readyz", readyz),
                page("/", "index.html"), page("/sagas/{ident:path}", "saga.html"),
                Mount("/static", StaticFiles(directory=STATIC), name="static")],
        middleware=[Middleware(Guard, token=token)],
        exception_handlers={StoreUnavailable: _store_down})
