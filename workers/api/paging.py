"""SWR list parameters: ``limit``/``offset``/ordering as query parameters or in ``filter``.

SWR accepts both ``?limit=10&offset=0`` and ``?filter=limit::10|offset::0|status::success``;
``filter`` values win. Lists answer with ``Content-Range: START-END/TOTAL``.
"""

from __future__ import annotations

from collections.abc import Mapping

from workers.api.errors import bad_request
from workers.inventory.queries import Page

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def parse_filter(raw: str | None, allowed: frozenset[str]) -> dict[str, str]:
    """Split ``key::value|key::value``; unknown keys are a 400 naming the key."""
    result: dict[str, str] = {}
    if not raw:
        return result
    for part in raw.split("|"):
        if not part:
            continue
        key, sep, value = part.partition("::")
        if not sep:
            raise bad_request(f"filter: expected key::value, got {part!r}")
        if key not in allowed:
            raise bad_request(f"filter: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        result[key] = value
    return result


def list_params(query: Mapping[str, str], allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters merged with the ``filter`` ones (``filter`` wins)."""
    params = {key: value for key, value in query.items() if key in allowed and value != ""}
    params.update(parse_filter(query.get("filter"), allowed))
    return params


def page_of(params: Mapping[str, str], default_order: str, order_columns: frozenset[str]) -> Page:
    limit = _int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int(params, "offset", 0, 0, 10**9)
    order_column = params.get("order_column", default_order)
    if order_column not in order_columns:
        raise bad_request(f"order_column: expected one of {', '.join(sorted(order_columns))}")
    order_type = params.get("order_type", "desc").lower()
    if order_type not in {"asc", "desc"}:
        raise bad_request("order_type: expected asc or desc")
    return Page(offset=offset, limit=limit, order_column=order_column, descending=order_type == "desc")


def content_range(offset: int, count: int, total: int) -> str:
    end = offset + count - 1 if count else offset
    return f"{offset}-{max(end, offset)}/{total}"


def _int(params: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{key}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise bad_request(f"{key}: must be between {low} and {high}")
    return value
