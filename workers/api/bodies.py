"""Reading JSON request bodies: every problem is a 400 that names the field."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import orjson
from aiohttp import web

from workers.api.errors import ApiError, bad_request

MAX_BODY = 256 * 1024
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else, 413 beyond ``MAX_BODY``."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "SWR.0413", f"request body larger than {MAX_BODY} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY:  # a chunked body has no Content-Length to refuse it by
        raise ApiError(413, "SWR.0413", f"request body larger than {MAX_BODY} bytes")
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise bad_request("request body: expected a JSON object")
    return body


def string(
    body: Mapping[str, Any],
    field: str,
    *,
    required: bool = True,
    default: str = "",
    max_length: int = 255,
    choices: Collection[str] | None = None,
    pattern: re.Pattern[str] | None = None,
) -> str:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise bad_request(f"{field}: required")
        return default
    if not isinstance(value, str):
        raise bad_request(f"{field}: expected a string")
    if len(value) > max_length:
        raise bad_request(f"{field}: at most {max_length} characters")
    if choices is not None and value not in choices:
        raise bad_request(f"{field}: expected one of {', '.join(choices)}, got {value!r}")
    if pattern is not None and not pattern.fullmatch(value):  # match's "$" accepts a trailing newline
        raise bad_request(f"{field}: {value!r} is not a valid name")
    return value


def boolean(body: Mapping[str, Any], field: str, default: bool) -> bool:
    """A JSON boolean, or the strings ``"true"``/``"false"`` SWR uses."""
    value = body.get(field)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise bad_request(f"{field}: expected true or false")


def number(body: Mapping[str, Any], field: str, *, low: float, high: float) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request(f"{field}: expected a number between {low:g} and {high:g}")
    return float(value)


def path_int(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 18:
        raise bad_request(f"{name}: expected a positive integer, got {raw!r}")
    return int(raw)
