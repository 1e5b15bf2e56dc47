"""Outgoing webhooks: Standard Webhooks signatures, Harbor/CloudEvents bodies, secrets at rest.

Signatures are checked with the reference ``standardwebhooks`` verifier; bodies with the JSON
schemas in ``schemas/`` and with this service's own Harbor ingress, which must read them back.
"""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from jsonschema import Draft202012Validator
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from workers.config import ConfigError, SecretSettings, Settings
from workers.events import harbor
from workers.events.model import Action, ArtifactKind, ImageEvent, Source, decode_event
from workers.secrets import KEYS_FILE, SecretBox, SecretError, mask, secret_box
from workers.triggers.payloads import (
    EVENT_TYPES,
    cloudevents_payload,
    encode_payload,
    event_type,
    harbor_payload,
)
from workers.triggers.signing import new_signing_secret, signature, valid_secret, webhook_headers

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
EXAMPLES = SCHEMAS / "examples"
HARBOR_SCHEMA = "webhook-harbor.v1.schema.json"
CLOUDEVENTS_SCHEMA = "webhook-cloudevents.v1.schema.json"
INGRESS_SCHEMA = "harbor-webhook.v1.schema.json"
HOST = "registry.example.com"
SOURCE = "/registry-workers/region-a"
DIGEST = "sha256:e04195917e3ff45ecc35385b099ab20d3ced3b5034a2d146045ca4b410e11872"
BODY = b'{"type":"PUSH_ARTIFACT"}'


@cache
def _validator(schema_file: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / schema_file).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _errors(schema_file: str, document: Any) -> list[str]:
    found = _validator(schema_file).iter_errors(document)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


# --- signing ------------------------------------------------------------------------------


def test_signature_matches_the_spec_test_vector() -> None:
    # The example of the Standard Webhooks specification and its reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == expected


def test_new_signing_secret_is_32_random_bytes() -> None:
    first, second = new_signing_secret(), new_signing_secret()
    assert first != second
    assert first.startswith("whsec_") and valid_secret(first)
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def test_headers_verify_with_each_rotation_secret() -> None:
    old, new = new_signing_secret(), new_signing_secret()
    timestamp = int(time.time())
    headers = webhook_headers([new, old], "msg-1", timestamp, BODY)
    assert headers["webhook-id"] == "msg-1"
    assert headers["webhook-timestamp"] == str(timestamp)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(BODY, headers) == {"type": "PUSH_ARTIFACT"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(BODY, headers)


def test_tampered_body_is_rejected() -> None:
    secret = new_signing_secret()
    headers = webhook_headers([secret], "msg-1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"type":"DELETE_ARTIFACT"}', headers)


def test_payload_headers_verify_end_to_end() -> None:
    secret = new_signing_secret()
    event = _event(Action.PUSH, tag="1.0.0", digest=DIGEST)
    body = encode_payload(cloudevents_payload(event, registry_host=HOST, source=SOURCE))
    headers = webhook_headers([secret], event.id, int(time.time()), body)
    assert Webhook(secret).verify(body, headers)["id"] == event.id


BAD_SECRETS = [
    pytest.param("", id="empty"),
    pytest.param(base64.b64encode(b"k" * 32).decode(), id="no-prefix"),
    pytest.param("whsec_", id="prefix-only"),
    pytest.param("whsec_not*base64!", id="not-base64"),
    pytest.param("whsec_" + base64.b64encode(b"short").decode(), id="too-short"),
    pytest.param("whsec_" + base64.b64encode(b"k" * 65).decode(), id="too-long"),
]


@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_malformed_secret_is_rejected(secret: str) -> None:
    assert not valid_secret(secret)
    with pytest.raises(ValueError):
        webhook_headers([new_signing_secret(), secret], "msg-1", 1, BODY)


def test_headers_need_a_secret() -> None:
    with pytest.raises(ValueError):
        webhook_headers([], "msg-1", 1, BODY)


# --- payloads -----------------------------------------------------------------------------


def _event(action: Action, *, tag: str | None, digest: str | None, actor: str | None = "ci-bot") -> ImageEvent:
    return ImageEvent(
        id=f"evt-{action.value}",
        source=Source.DISTRIBUTION,
        region="region-a",
        action=action,
        kind=ArtifactKind.MANIFEST,
        name="team/app/api",
        namespace="team",
        repository="app/api",
        tag=tag,
        digest=digest,
        media_type=None,
        size=None,
        occurred_at=datetime(2026, 11, 22, 21, 42, 6, 106810, tzinfo=UTC),
        actor=actor,
    )


EVENTS = [
    pytest.param(_event(Action.PUSH, tag="1.0.0", digest=DIGEST), id="push-tag"),
    pytest.param(_event(Action.DELETE, tag=None, digest=DIGEST), id="delete-digest"),
    pytest.param(_event(Action.DELETE, tag="1.0.0", digest=None), id="delete-tag-only"),
    pytest.param(_event(Action.PULL, tag="1.0.0", digest=DIGEST, actor=None), id="pull-anonymous"),
]


def _same_image_event(back: ImageEvent, event: ImageEvent) -> None:
    assert (back.action, back.name, back.tag, back.digest, back.actor) == (
        event.action,
        event.name,
        event.tag,
        event.digest,
        event.actor,
    )


@pytest.mark.parametrize("event", EVENTS)
def test_harbor_payload_follows_its_schema_and_reads_back(event: ImageEvent) -> None:
    payload = harbor_payload(event, registry_host=f"https://{HOST}/")
    assert _errors(HARBOR_SCHEMA, payload) == []
    assert _errors(INGRESS_SCHEMA, payload) == []
    assert payload["type"] == event_type(event) == EVENT_TYPES[event.action]
    assert payload["occur_at"] == int(event.occurred_at.timestamp())
    [resource] = payload["event_data"]["resources"]
    reference = f"{event.name}:{event.tag}" if event.tag else f"{event.name}@{event.digest}"
    assert resource["resource_url"] == f"{HOST}/{reference}"
    [back] = harbor.normalise_payload(payload, "region-a", datetime.now(UTC))
    _same_image_event(back, event)


def test_without_a_configured_registry_the_reference_has_no_host() -> None:
    event = _event(Action.PUSH, tag="1.0.0", digest=DIGEST)
    payload = harbor_payload(event, registry_host="")
    assert _errors(HARBOR_SCHEMA, payload) == []
    assert payload["event_data"]["resources"][0]["resource_url"] == f"{event.name}:1.0.0"


@pytest.mark.parametrize("event", EVENTS)
def test_cloudevents_payload_follows_its_schema_and_reads_back(event: ImageEvent) -> None:
    payload = cloudevents_payload(event, registry_host=HOST, source=SOURCE)
    assert _errors(CLOUDEVENTS_SCHEMA, payload) == []
    assert _errors(INGRESS_SCHEMA, payload) == []
    assert payload["id"] == event.id
    assert payload["time"] == "2026-11-22T21:42:06.106810Z"
    assert payload["data"]["operator"] == payload["operator"] == (event.actor or "")
    [back] = harbor.normalise_payload(payload, "region-a", datetime.now(UTC))
    _same_image_event(back, event)
    assert back.occurred_at == event.occurred_at


def test_every_action_has_both_types() -> None:
    for action in Action:
        event = _event(action, tag="1.0.0", digest=DIGEST)
        assert harbor.DEFAULT_TYPES[harbor_payload(event, registry_host=HOST)["type"]] is action
        ce_type = cloudevents_payload(event, registry_host=HOST, source=SOURCE)["type"]
        assert harbor.CLOUDEVENT_TYPES[ce_type] is action


def test_payload_without_tag_or_digest_is_refused() -> None:
    event = _event(Action.PUSH, tag=None, digest=None)
    with pytest.raises(ValueError):
        harbor_payload(event, registry_host=HOST)
    with pytest.raises(ValueError):
        cloudevents_payload(_event(Action.PUSH, tag="1", digest=None), registry_host=HOST, source="")


def test_encode_payload_is_compact_json() -> None:
    assert encode_payload({"a": 1, "b": [None, "x"]}) == b'{"a":1,"b":[null,"x"]}'


# --- examples: they follow their schemas and are exactly what the builders write ----------

# example file → the image-events example it is built from
EXAMPLE_SOURCES = {"push-tag": "push-tagged-manifest", "delete-digest": "delete-digest", "pull": "pull"}


def _harbor_example(event: ImageEvent) -> dict[str, Any]:
    return harbor_payload(event, registry_host=HOST)


def _cloudevents_example(event: ImageEvent) -> dict[str, Any]:
    return cloudevents_payload(event, registry_host=HOST, source=SOURCE)


# examples directory → (its schema, the builder that writes its examples)
BUILDERS: dict[str, tuple[str, Callable[[ImageEvent], dict[str, Any]]]] = {
    "webhook-harbor/1": (HARBOR_SCHEMA, _harbor_example),
    "webhook-cloudevents/1": (CLOUDEVENTS_SCHEMA, _cloudevents_example),
}
WEBHOOK_EXAMPLES = [
    pytest.param(directory, path, id=str(path.relative_to(EXAMPLES)))
    for directory in BUILDERS
    for path in sorted((EXAMPLES / directory).glob("*.json"))
]


def test_every_format_has_examples() -> None:
    for directory in BUILDERS:
        assert {p.stem for p in (EXAMPLES / directory).glob("*.json")} == set(EXAMPLE_SOURCES), directory


@pytest.mark.parametrize(("directory", "path"), WEBHOOK_EXAMPLES)
def test_webhook_example_follows_its_schema_and_the_builder(directory: str, path: Path) -> None:
    schema_file, build = BUILDERS[directory]
    example = json.loads(path.read_text(encoding="utf-8"))
    assert _errors(schema_file, example) == []
    source = EXAMPLES / "image-events/1" / f"{EXAMPLE_SOURCES[path.stem]}.json"
    assert build(decode_event(source.read_bytes())) == example


def test_schemas_reject_what_the_builders_never_write() -> None:
    example = json.loads((EXAMPLES / "webhook-harbor/1/push-tag.json").read_text(encoding="utf-8"))
    assert _errors(HARBOR_SCHEMA, example | {"type": "SCANNING_COMPLETED"})
    assert _errors(HARBOR_SCHEMA, example | {"occur_at": "2026-11-22T21:42:06Z"})
    assert _errors(HARBOR_SCHEMA, example | {"extra": 1})
    ce = json.loads((EXAMPLES / "webhook-cloudevents/1/pull.json").read_text(encoding="utf-8"))
    assert _errors(CLOUDEVENTS_SCHEMA, ce | {"specversion": "0.3"})
    assert _errors(CLOUDEVENTS_SCHEMA, ce | {"time": "2026-11-22T21:50:12"})
    assert _errors(CLOUDEVENTS_SCHEMA, {k: v for k, v in ce.items() if k != "subject"})


# --- secrets at rest ----------------------------------------------------------------------


def test_secret_box_round_trip() -> None:
    box = SecretBox([SecretBox.generate_key()])
    token = box.encrypt("whsec_top-secret")
    assert "top-secret" not in token
    assert box.decrypt(token) == "whsec_top-secret"
    assert box.encrypt("same") != box.encrypt("same")  # random IV: equal secrets look different


def test_rotation_keeps_old_tokens_readable_and_moves_them_to_the_new_key() -> None:
    old_key, new_key = SecretBox.generate_key(), SecretBox.generate_key()
    token = SecretBox([old_key]).encrypt("password")
    both = SecretBox([new_key, old_key])
    assert both.decrypt(token) == "password"
    rotated = both.rotate(token)
    assert SecretBox([new_key]).decrypt(rotated) == "password"
    with pytest.raises(SecretError):
        SecretBox([old_key]).decrypt(rotated)
    with pytest.raises(SecretError):
        SecretBox([old_key]).decrypt(both.encrypt("new"))  # the first key encrypts


def test_wrong_key_or_tampered_token_is_a_secret_error_without_the_token() -> None:
    token = SecretBox([SecretBox.generate_key()]).encrypt("password")
    box = SecretBox([SecretBox.generate_key()])
    for bad in (token, token[:-4] + "AAAA", "not a token", "ünïcode"):
        with pytest.raises(SecretError) as raised:
            box.decrypt(bad)
        assert bad not in str(raised.value)
    with pytest.raises(SecretError):
        box.rotate(token)


def test_secret_box_needs_a_key() -> None:
    with pytest.raises(ValueError):
        SecretBox([])


def test_secret_box_generates_the_key_file_once_and_reuses_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    token = secret_box(settings).encrypt("password")
    path = tmp_path / "data" / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [key] = path.read_text(encoding="ascii").splitlines()
    Fernet(key)
    assert secret_box(settings).decrypt(token) == "password"
    assert path.read_text(encoding="ascii") == key + "\n"
    assert [p.name for p in path.parent.iterdir()] == [KEYS_FILE]  # no temporary file left


def test_configured_keys_win_over_the_key_file(tmp_path: Path) -> None:
    key = SecretBox.generate_key()
    settings = Settings(data_dir=tmp_path, secrets=SecretSettings(keys=(key,)))
    token = secret_box(settings).encrypt("password")
    assert SecretBox([key]).decrypt(token) == "password"
    assert not (tmp_path / KEYS_FILE).exists()


def test_corrupt_key_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / KEYS_FILE).write_text("not-a-key\n", encoding="ascii")
    with pytest.raises(ConfigError, match=KEYS_FILE):
        secret_box(Settings(data_dir=tmp_path))


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        (None, None),
        ("", "******"),
        ("s3cr3t", "******"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "******"),
        ("Authorization: Bearer abc", "Authorization: ******"),
        ("X-Api-Key: abc", "X-Api-Key: ******"),
        ("https://user:password@example.com", "******"),
    ],
)
def test_mask(value: str | None, masked: str | None) -> None:
    assert mask(value) == masked
