"""``POST /events/distribution`` and ``POST /events/harbor``.

Each request is checked in this order — token (401), content type (415), size (413), JSON
(without NUL characters, which Postgres cannot store) and schema (400) — then every event is
normalised and produced to the image-events topic. The answer is 202 only after the broker
acknowledged every event; when it does not, 503 with ``Retry-After`` so that the registry
retries and nothing is lost.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from workers import metrics
from workers.api.context import ApiContext, api_context
from workers.api.errors import ApiError
from workers.events import distribution, harbor
from workers.events.model import ImageEvent, encode_event
from workers.events.payload import PayloadError
from workers.runtime.producer import BrokerUnavailable, OutgoingMessage

RETRY_AFTER_S = "5"
DISTRIBUTION_TYPES = frozenset({distribution.MEDIA_TYPE, "application/json"})
HARBOR_TYPES = frozenset({"application/json", "application/cloudevents+json"})

Normaliser = Callable[[Any, str, datetime], list[ImageEvent]]

routes = web.RouteTableDef()


@routes.post("/events/distribution")
async def distribution_events(request: web.Request) -> web.Response:
    return await _ingest(request, "distribution", DISTRIBUTION_TYPES, _from_distribution)


@routes.post("/events/harbor")
async def harbor_events(request: web.Request) -> web.Response:
    return await _ingest(request, "harbor", HARBOR_TYPES, harbor.normalise_payload)


def _from_distribution(body: Any, region: str, _received_at: datetime) -> list[ImageEvent]:
    return distribution.normalise_envelope(body, region)


async def _ingest(
    request: web.Request, source: str, content_types: frozenset[str], normalise: Normaliser
) -> web.Response:
    ctx = api_context(request)
    try:
        _check_token(request, ctx)
        _check_content_type(request, content_types)
        body = await _read_json(request, ctx.settings.ingress_max_body)
        region = _region(request, ctx)
        try:
            events = normalise(body, region, ctx.clock())
        except PayloadError as exc:
            raise ApiError(400, "RW.INGRESS.INVALID_EVENT", str(exc)) from None
    except ApiError as exc:
        metrics.INGRESS_REJECTED.labels(str(exc.status)).inc()
        raise
    await _produce(ctx, events)
    metrics.EVENTS_RECEIVED.labels(source).inc(len(events))
    return web.json_response({"accepted": len(events), "ids": [e.id for e in events]}, status=202)


def _check_token(request: web.Request, ctx: ApiContext) -> None:
    expected = ctx.settings.ingress_token or ""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "RW.INGRESS.UNAUTHORIZED", "Authorization: expected 'Bearer <ingress token>'")
    if not expected or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(401, "RW.INGRESS.UNAUTHORIZED", "Authorization: the ingress token is not valid")


def _check_content_type(request: web.Request, accepted: frozenset[str]) -> None:
    if request.content_type not in accepted:
        raise ApiError(
            415,
            "RW.INGRESS.UNSUPPORTED_MEDIA_TYPE",
            f"Content-Type: {request.content_type!r} is not accepted here (expected {', '.join(sorted(accepted))})",
        )


async def _read_json(request: web.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    raw = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        raw.extend(chunk)
        if len(raw) > limit:
            raise _too_large(limit)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "RW.INGRESS.INVALID_JSON", f"body: not valid JSON ({exc})") from None
    if b"\\u0000" in raw:  # JSON spells NUL only as this escape: walk the body only then
        _check_no_nul(body)
    return body


def _check_no_nul(body: Any) -> None:
    """Refuse NUL characters in any key or string, naming where: Postgres text cannot hold them."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}" if path else key, item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
        if "\x00" in path or (isinstance(value, str) and "\x00" in value):
            raise ApiError(400, "RW.INGRESS.INVALID_EVENT", f"{path or 'body'}: contains a NUL character (\\u0000)")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "RW.INGRESS.TOO_LARGE", f"body: larger than the {limit}-byte limit (RW_INGRESS_MAX_BODY)")


def _region(request: web.Request, ctx: ApiContext) -> str:
    region = request.query.get("region", ctx.settings.region)
    if region != ctx.settings.region and region not in ctx.settings.regions:
        known = sorted({ctx.settings.region, *ctx.settings.regions})
        raise ApiError(
            400, "RW.INGRESS.UNKNOWN_REGION", f"region: unknown region {region!r} (known: {', '.join(known)})"
        )
    return region


async def _produce(ctx: ApiContext, events: list[ImageEvent]) -> None:
    if not events:
        return
    topic = ctx.topics.image_events
    messages = [OutgoingMessage(topic, e.key, encode_event(e), (("rw-schema", b"image-events.v1"),)) for e in events]
    try:
        await ctx.producer.publish(messages)
    except BrokerUnavailable as exc:
        metrics.INGRESS_REJECTED.labels("503").inc()
        raise ApiError(
            503,
            "RW.INGRESS.BROKER_UNAVAILABLE",
            f"events not accepted, retry later: {exc}",
            {"Retry-After": RETRY_AFTER_S},
        ) from None
    metrics.EVENTS_PRODUCED.labels(topic).inc(len(messages))
