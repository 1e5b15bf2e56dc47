"""Validation of webhook policy bodies (create and update); every error names its field.

Targets are checked by the SSRF guard at save time (and again at connect time by the
deliverer). An ``auth_header`` sent back masked, as a GET shows it, keeps the stored value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workers.api import bodies
from workers.api.context import ApiContext
from workers.api.errors import bad_request
from workers.db.models import WebhookPolicy
from workers.secrets import MASK
from workers.triggers.matching import TARGET_TYPES
from workers.triggers.payloads import EVENT_TYPES
from workers.triggers.selectors import SelectorError, parse_scope_rules, scope_rules_to_json
from workers.triggers.ssrf import ForbiddenTarget, check_target_url, parse_allowed

HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
EVENT_TYPE_NAMES = tuple(EVENT_TYPES.values())
MAX_TARGETS = 10


@dataclass(frozen=True)
class PolicyFields:
    name: str
    description: str
    targets: list[dict[str, Any]]
    scope_rules: list[dict[str, Any]]
    event_types: list[str]
    enabled: bool
    retry_schedule_s: list[float] | None

    @classmethod
    def of(cls, policy: WebhookPolicy) -> PolicyFields:
        return cls(
            policy.name,
            policy.description,
            list(policy.targets),
            list(policy.scope_rules),
            list(policy.event_types),
            policy.enabled,
            policy.retry_schedule_s,
        )

    def apply(self, policy: WebhookPolicy) -> None:
        policy.name = self.name
        policy.description = self.description
        policy.targets = self.targets
        policy.scope_rules = self.scope_rules
        policy.event_types = self.event_types
        policy.enabled = self.enabled
        policy.retry_schedule_s = self.retry_schedule_s


async def policy_fields(body: dict[str, Any], ctx: ApiContext, existing: WebhookPolicy | None) -> PolicyFields:
    """Validated fields; on update, absent fields keep the ``existing`` values."""
    current = PolicyFields.of(existing) if existing is not None else None

    def keep(field: str) -> bool:
        return current is not None and field not in body

    return PolicyFields(
        name=current.name if current and keep("name") else bodies.string(body, "name", max_length=255),
        description=current.description
        if current and keep("description")
        else bodies.string(body, "description", required=False, max_length=1024),
        targets=current.targets if current and keep("targets") else await _targets(body.get("targets"), ctx, existing),
        scope_rules=current.scope_rules if current and keep("scope_rules") else _scope_rules(body.get("scope_rules")),
        event_types=current.event_types if current and keep("event_types") else _event_types(body.get("event_types")),
        enabled=current.enabled if current and keep("enabled") else bodies.boolean(body, "enabled", True),
        retry_schedule_s=current.retry_schedule_s
        if current and keep("retry_schedule")
        else _schedule(body.get("retry_schedule")),
    )


async def _targets(raw: object, ctx: ApiContext, existing: WebhookPolicy | None) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("targets: expected a non-empty list of targets")
    if len(raw) > MAX_TARGETS:
        raise bad_request(f"targets: at most {MAX_TARGETS} targets")
    allowed = parse_allowed(ctx.settings.triggers.allowed_networks)
    previous = existing.targets if existing is not None else []
    targets = []
    for index, item in enumerate(raw):
        field = f"targets[{index}]"
        if not isinstance(item, dict):
            raise bad_request(f"{field}: expected an object")
        address = bodies.string(item, "address", max_length=2048)
        try:
            await check_target_url(address, allowed)
        except ValueError as exc:
            raise bad_request(f"{field}.address: {exc}") from None
        except ForbiddenTarget as exc:
            raise bad_request(f"{field}.address: refused: {exc}", code="SWR.0403") from None
        kept = previous[index] if index < len(previous) else {}
        targets.append(
            {
                "type": _field(
                    bodies.string, item, field, "type", required=False, default="http", choices=TARGET_TYPES
                ),
                "address": address,
                "auth_header": _auth_header(item.get("auth_header"), f"{field}.auth_header", ctx, kept),
                "skip_cert_verify": _field(bodies.boolean, item, field, "skip_cert_verify", False),
                "address_type": _field(
                    bodies.string, item, field, "address_type", required=False, default="internet", max_length=32
                ),
                "disabled_at": kept.get("disabled_at") if kept.get("address") == address else None,
            }
        )
    return targets


def _field(reader: Any, item: dict[str, Any], prefix: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Run a ``bodies`` reader on a nested object, naming the field by its full path."""
    try:
        return reader(item, name, *args, **kwargs)
    except Exception as exc:
        message = getattr(exc, "message", None)
        if message is None:
            raise
        raise bad_request(f"{prefix}.{message}") from None


def _auth_header(raw: object, field: str, ctx: ApiContext, kept: dict[str, Any]) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > 4096:
        raise bad_request(f"{field}: expected a string 'Name: value'")
    if MASK in raw and kept.get("auth_header"):
        return str(kept["auth_header"])  # sent back as shown by GET: keep the stored value
    name, sep, value = raw.partition(":")
    if not sep or not HEADER_NAME.match(name.strip()) or not value.strip() or "\n" in raw or "\r" in raw:
        raise bad_request(f"{field}: expected 'Name: value', e.g. 'Authorization: Bearer ...'")
    return ctx.secret_box.encrypt(raw)


def _scope_rules(raw: object) -> list[dict[str, Any]]:
    try:
        return scope_rules_to_json(parse_scope_rules(raw))
    except SelectorError as exc:
        raise bad_request(str(exc)) from None


def _event_types(raw: object) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(item, str) for item in raw):
        raise bad_request(f"event_types: expected a non-empty list of {', '.join(EVENT_TYPE_NAMES)}")
    unknown = [item for item in raw if item not in EVENT_TYPE_NAMES]
    if unknown:
        raise bad_request(f"event_types: unknown event type {unknown[0]!r}; expected {', '.join(EVENT_TYPE_NAMES)}")
    return list(dict.fromkeys(raw))


def _schedule(raw: object) -> list[float] | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or not 1 <= len(raw) <= 50
        or not all(isinstance(d, int | float) and not isinstance(d, bool) and 0 <= d <= 7 * 86400 for d in raw)
    ):
        raise bad_request("retry_schedule: expected 1 to 50 delays in seconds, each between 0 and 604800")
    return [float(d) for d in raw]
