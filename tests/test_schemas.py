"""The contracts in ``schemas/``: the schemas are valid, the examples follow them, and the code
reads and writes exactly what they describe.

Each schema and each example file is its own test case, so a failure names the file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from workers.api.errors import error_response
from workers.config import Settings
from workers.db.engine import create_engine, session_factory
from workers.errors import InvalidMessage
from workers.events import distribution, harbor
from workers.events.model import decode_event, encode_event
from workers.events.payload import PayloadError
from workers.runtime.kafka import Topics
from workers.secrets import SecretBox
from workers.topology import FlowDependencies, build_consumers, build_flows

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
EXAMPLES = SCHEMAS / "examples"
IMAGE_EVENTS = "image-events.v1.schema.json"
DISTRIBUTION = "distribution-notification.v1.schema.json"
HARBOR = "harbor-webhook.v1.schema.json"
API_ERROR = "api-error.v1.schema.json"
REGION = "region-a"
RECEIVED_AT = datetime(2026, 11, 22, 22, 0, tzinfo=UTC)
PREFIX = "{prefix}"  # how topics/*.yaml write the configurable topic prefix

# The schema every examples directory follows (relative to schemas/examples/).
EXAMPLE_SCHEMAS = {
    "image-events/1": IMAGE_EVENTS,
    "distribution": DISTRIBUTION,
    "harbor": HARBOR,
    "api-error/1": API_ERROR,
    "commands/1": "commands.v1.schema.json",
    "webhook-harbor/1": "webhook-harbor.v1.schema.json",
    "webhook-cloudevents/1": "webhook-cloudevents.v1.schema.json",
    "iam-policy/1": "iam-policy.v1.schema.json",
}

HARBOR_ARTIFACT_TYPES = {*harbor.DEFAULT_TYPES, *harbor.CLOUDEVENT_TYPES}


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def _validator(schema_file: str) -> Draft202012Validator:
    schema = _load(SCHEMAS / schema_file)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _errors(schema_file: str, document: Any) -> list[str]:
    found = _validator(schema_file).iter_errors(document)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def _params(directory: str) -> list[Any]:
    return [pytest.param(p, id=str(p.relative_to(EXAMPLES))) for p in sorted((EXAMPLES / directory).glob("*.json"))]


SCHEMA_PATHS = sorted(SCHEMAS.glob("*.schema.json"))
TOPIC_PATHS = sorted((SCHEMAS / "topics").glob("*.yaml"))
SCHEMA_FILES = [pytest.param(p, id=p.name) for p in SCHEMA_PATHS]
TOPIC_FILES = [pytest.param(p, id=p.name) for p in TOPIC_PATHS]
ALL_EXAMPLES = [
    pytest.param(param.values[0], schema, id=param.id)
    for directory, schema in EXAMPLE_SCHEMAS.items()
    for param in _params(directory)
]
DISTRIBUTION_EXAMPLES = _params("distribution") or [
    pytest.param(
        None,
        marks=pytest.mark.skip(reason="schemas/examples/distribution/ is empty: no captured notifications yet"),
        id="no-captured-notifications",
    )
]


# --- the schemas themselves ---------------------------------------------------------------


def test_the_schemas_are_found() -> None:
    assert {p.name for p in SCHEMA_PATHS} >= {IMAGE_EVENTS, DISTRIBUTION, HARBOR, API_ERROR}


@pytest.mark.parametrize("path", SCHEMA_FILES)
def test_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = _load(path)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == path.name.removesuffix(".schema.json")
    assert schema["$id"].endswith(schema["title"])
    assert schema["description"]


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _described_properties(node: Any, root: dict[str, Any], where: str) -> Iterator[tuple[str, bool]]:
    """(JSON path, has a description) for every property declared anywhere in ``node``."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _described_properties(item, root, f"{where}/{index}")
        return
    if not isinstance(node, dict):
        return
    for name, sub in node.get("properties", {}).items():
        target = _resolve(root, sub["$ref"]) if "description" not in sub and "$ref" in sub else sub
        yield f"{where}/properties/{name}", "description" in target
    for key, value in node.items():
        if key != "properties":
            yield from _described_properties(value, root, f"{where}/{key}")
        else:
            for name, sub in value.items():
                yield from _described_properties(sub, root, f"{where}/properties/{name}")


@pytest.mark.parametrize("path", SCHEMA_FILES)
def test_every_property_is_described(path: Path) -> None:
    schema = _load(path)
    undescribed = [where for where, described in _described_properties(schema, schema, "#") if not described]
    assert not undescribed, f"properties without a description: {undescribed}"


# --- every example follows its schema ----------------------------------------------------


def test_every_examples_directory_has_a_schema() -> None:
    directories = {str(p.parent.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.json")}
    assert directories <= set(EXAMPLE_SCHEMAS), f"examples without a schema: {directories - set(EXAMPLE_SCHEMAS)}"
    for directory in ("image-events/1", "harbor", "api-error/1"):
        assert _params(directory), f"schemas/examples/{directory}/ has no examples"


@pytest.mark.parametrize(("path", "schema_file"), ALL_EXAMPLES)
def test_example_follows_its_schema(path: Path, schema_file: str) -> None:
    assert _errors(schema_file, _load(path)) == []


# --- topics -------------------------------------------------------------------------------


def test_every_topic_is_described() -> None:
    described = {yaml.safe_load(p.read_text(encoding="utf-8"))["name"] for p in TOPIC_PATHS}
    assert described == set(Topics.from_prefix(PREFIX).all())


@pytest.mark.parametrize("path", TOPIC_FILES)
def test_topic_description(path: Path) -> None:
    topic = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert topic["topic"] == path.stem
    assert topic["name"].startswith(f"{PREFIX}.{path.stem}.v")
    assert topic["description"] and topic["key"]["description"] and topic["headers"]
    for version in topic["schemas"]:
        assert (SCHEMAS / version["resource"]).is_file(), version["resource"]
        assert version["resource"].endswith(f".v{version['version']}.schema.json")
        for directory in version["examples"]:
            directory = directory.rstrip("/")
            assert EXAMPLE_SCHEMAS.get(directory) == version["resource"], directory
            assert _params(directory), f"no examples in {directory}"


def test_topic_consumer_groups_match_the_topology() -> None:
    """The consumer groups each topic file lists are exactly the flows that read the topic."""
    defaults = Settings()
    settings = defaults.model_copy(update={"kafka": defaults.kafka.model_copy(update={"topic_prefix": PREFIX})})
    engine = create_engine("sqlite+aiosqlite://")  # building a flow opens nothing
    box = SecretBox([SecretBox.generate_key()])
    sessions = session_factory(engine)
    deps = FlowDependencies(settings, Topics.from_prefix(PREFIX), engine, sessions, lambda: RECEIVED_AT, box)
    actual: dict[str, set[tuple[str, str]]] = {}
    for consumer in build_consumers(build_flows(deps), PREFIX):
        actual.setdefault(consumer.topic, set()).update((flow.kind, consumer.group) for flow in consumer.flows)
    for path in TOPIC_PATHS:
        topic = yaml.safe_load(path.read_text(encoding="utf-8"))
        listed = {(c["kind"], c["group"]) for c in topic["services"]["consumers"]}
        assert listed == actual.get(topic["name"], set()), topic["name"]


# --- image-events: the code reads and writes exactly the documents the schema describes ---


@pytest.mark.parametrize("path", _params("image-events/1"))
def test_image_event_example_round_trips(path: Path) -> None:
    example = _load(path)
    event = decode_event(path.read_bytes())
    assert event.to_document() == example
    assert orjson.loads(encode_event(event)) == example
    assert event.key == example["name"].encode()


def _valid_image_event() -> dict[str, Any]:
    return dict(_load(EXAMPLES / "image-events/1/push-tagged-manifest.json"))


MALFORMED_IMAGE_EVENTS = [
    pytest.param({"action": "tagged"}, id="unknown-action"),
    pytest.param({"action": "PUSH"}, id="action-wrong-case"),
    pytest.param({"digest": "sha256:e04195917e3f"}, id="digest-too-short"),
    pytest.param({"digest": "sha256:" + "E0" * 32}, id="digest-uppercase-hex"),
    pytest.param({"digest": "e04195917e3ff45ecc35385b099ab20d3ced3b5034a2d146045ca4b410e11872"}, id="digest-no-algo"),
    pytest.param({"kind": "index"}, id="unknown-kind"),
    pytest.param({"source": "quay"}, id="unknown-source"),
    pytest.param({"name": "Team/App"}, id="name-uppercase"),
    pytest.param({"tag": ".hidden"}, id="tag-bad-first-char"),
    pytest.param({"size": -1}, id="negative-size"),
    pytest.param({"size": "396"}, id="size-as-string"),
    pytest.param({"occurred_at": "2026-11-22T21:42:06"}, id="time-without-zone"),
    pytest.param({"schema": "image-events.v2"}, id="other-schema-version"),
]


@pytest.mark.parametrize("change", MALFORMED_IMAGE_EVENTS)
def test_malformed_image_event_is_rejected_by_schema_and_decoder(change: dict[str, Any]) -> None:
    document = _valid_image_event() | change
    assert _errors(IMAGE_EVENTS, document), "the schema accepted it"
    with pytest.raises(InvalidMessage):
        decode_event(orjson.dumps(document))


@pytest.mark.parametrize("key", ["id", "action", "name", "occurred_at"])
def test_image_event_missing_required_field_is_rejected(key: str) -> None:
    document = _valid_image_event()
    del document[key]
    assert _errors(IMAGE_EVENTS, document)
    with pytest.raises(InvalidMessage):
        decode_event(orjson.dumps(document))


def test_image_event_schema_rejects_unknown_fields() -> None:
    assert _errors(IMAGE_EVENTS, _valid_image_event() | {"extra": 1})


# --- inbound payloads: valid examples normalise into valid image events -------------------


def _check_produced(events: list[Any]) -> None:
    for event in events:
        document = event.to_document()
        assert _errors(IMAGE_EVENTS, document) == [], document
        assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("path", _params("harbor"))
def test_harbor_example_normalises_into_valid_image_events(path: Path) -> None:
    body = _load(path)
    assert _errors(HARBOR, body) == []
    events = harbor.normalise_payload(body, REGION, RECEIVED_AT)
    data = body.get("data") if harbor.is_cloudevent(body) else body.get("event_data")
    expected = len(data["resources"]) if body["type"] in HARBOR_ARTIFACT_TYPES else 0
    assert len(events) == expected
    _check_produced(events)


@pytest.mark.parametrize("path", DISTRIBUTION_EXAMPLES)
def test_distribution_example_normalises_into_valid_image_events(path: Path) -> None:
    body = _load(path)
    assert _errors(DISTRIBUTION, body) == []
    events = distribution.normalise_envelope(body, REGION)
    assert [e.id for e in events] == [raw["id"] for raw in body["events"]]
    _check_produced(events)


def test_harbor_schema_tells_the_two_formats_apart() -> None:
    cloudevent = _load(EXAMPLES / "harbor/pull-cloudevents.json")
    assert _errors(HARBOR, cloudevent | {"specversion": "0.3"})
    assert _errors(HARBOR, {k: v for k, v in cloudevent.items() if k != "specversion"})
    default = _load(EXAMPLES / "harbor/push-default.json")
    assert _errors(HARBOR, default | {"occur_at": "yesterday"})
    broken = json.loads(json.dumps(default))
    broken["event_data"]["resources"][0]["digest"] = "sha256:0e9a"
    assert _errors(HARBOR, broken)


def test_api_error_bodies_follow_the_schema() -> None:
    for status, code in ((400, "SWR.0400"), (404, "SWR.0404"), (503, "RW.INGRESS.BROKER_UNAVAILABLE")):
        body = error_response(status, code, "what is wrong").body
        assert isinstance(body, bytes)
        assert _errors(API_ERROR, orjson.loads(body)) == []
    assert _errors(API_ERROR, {"error_code": "SWR.0400"})


# --- regressions: defects found in workers/events and fixed ----------------------------------

_UNTAGGED = "sha256:dde8e930c7b6a490f728e66292bc9bce42efc9bbb5278bae40e4f30f6e00fe8c"


def test_harbor_untagged_artifact_carries_the_digest_in_tag() -> None:
    # Harbor's own documented CloudEvents example (src/pkg/notifier/formats/cloudevents.go).
    body = _load(EXAMPLES / "harbor/pull-cloudevents.json")
    body["data"]["resources"] = [
        {"digest": _UNTAGGED, "tag": _UNTAGGED, "resource_url": f"harbor.example.com/team/app/api@{_UNTAGGED}"}
    ]
    assert _errors(HARBOR, body) == []
    [event] = harbor.normalise_payload(body, REGION, RECEIVED_AT)
    assert (event.tag, event.digest) == (None, _UNTAGGED)


@pytest.mark.parametrize("field", ["name", "tag", "digest"])
def test_trailing_newline_is_rejected(field: str) -> None:
    document = _valid_image_event()
    document[field] += "\n"
    with pytest.raises(InvalidMessage):
        decode_event(orjson.dumps(document))


def test_harbor_out_of_range_occur_at_is_a_payload_error() -> None:
    body = _load(EXAMPLES / "harbor/push-default.json") | {"occur_at": 1e20}
    assert _errors(HARBOR, body)
    with pytest.raises(PayloadError):
        harbor.normalise_payload(body, REGION, RECEIVED_AT)


@pytest.fixture
def local_time_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_not_utc")
def test_harbor_cloudevent_time_without_offset_is_not_local_time() -> None:
    body = _load(EXAMPLES / "harbor/pull-cloudevents.json") | {"time": "2026-11-22T21:50:12"}
    assert _errors(HARBOR, body), "RFC 3339 requires an offset"
    try:
        [event] = harbor.normalise_payload(body, REGION, RECEIVED_AT)
    except PayloadError:
        return  # rejecting it is fine too
    assert event.occurred_at == datetime(2026, 11, 22, 21, 50, 12, tzinfo=UTC)


@pytest.mark.parametrize("path", _params("commands/1"))
def test_command_example_round_trips(path: Path) -> None:
    from workers.maintenance.commands import decode_command
    from workers.runtime.flow import Record

    command = decode_command(Record("t", 0, 0, None, path.read_bytes(), 0, ()))
    assert orjson.loads(command.encode()) == _load(path)
