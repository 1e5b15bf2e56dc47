"""JSON errors of the HTTP surface.

Every failed request answers ``{"error_code": ..., "error_msg": ...}`` with a matching HTTP
status, the shape the official ``huaweicloudsdkswr`` SDK reads. Handlers raise ``ApiError``;
the ``error_middleware`` turns it (and any unexpected exception) into that body.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from workers.db.engine import TRANSIENT_DB_ERRORS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A request failed for a reason the caller can act on.

    ``code`` is stable and machine-readable; ``message`` names what is wrong (the field, the
    header, the limit) in words a person can act on.
    """

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON error body every route answers with."""
    return web.json_response({"error_code": code, "error_msg": message}, status=status, headers=headers)


def bad_request(message: str, code: str = "SWR.0400") -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str, code: str = "SWR.0404") -> ApiError:
    return ApiError(404, code, message)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render ``ApiError`` and aiohttp's own HTTP errors as JSON; hide internal failures."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own body limit says what the limit is in its text, not in its reason.
        message = (exc.text or exc.reason) if isinstance(exc, web.HTTPRequestEntityTooLarge) else exc.reason
        return error_response(exc.status, f"SWR.0{exc.status}", message, _passthrough_headers(exc))
    except TRANSIENT_DB_ERRORS as exc:  # a dependency (database, registry) is briefly unreachable
        log.warning("dependency unavailable serving %s %s: %r", request.method, request.path, exc)
        message = f"a dependency is unavailable ({type(exc).__name__}); retry later"
        return error_response(503, "SWR.0503", message, {"Retry-After": "5"})
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(500, "SWR.0500", "internal error; see the service log")


def _passthrough_headers(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "Retry-After")
    return {name: exc.headers[name] for name in keep if name in exc.headers}
