"""AK/SK verification against the official Huawei Cloud signer and SDK client."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkswr.v2 import SwrClient
from huaweicloudsdkswr.v2.model import (
    CreateNamespaceRequest,
    CreateNamespaceRequestBody,
    ListRepositoryTagsRequest,
    ListSyncRegionsRequest,
)
from requests.utils import requote_uri
from yarl import URL

from workers.api.aksk import (
    CODE_BAD_SIGNATURE,
    CODE_CLOCK_SKEW,
    SignatureError,
    SignedRequest,
    canonical_request,
    parse_authorization,
    sign,
    string_to_sign,
    verify,
)
from workers.api.authn import (
    CODE_UNKNOWN_KEY,
    KeyRecord,
    Principal,
    StaticKeyResolver,
    aksk_middleware,
    principal_of,
)

AK = "HPUAEXAMPLEACCESSKEY"
SK = "s3cr3t/SecretKeyExample+0123456789abcdef"
DATE = "20261122T101010Z"
NOW = datetime(2026, 11, 22, 10, 10, 10, tzinfo=UTC)
HOST = "swr-api.example.com:8443"


def sdk_sign(
    method: str,
    resource_path: str,
    query: list[tuple[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    body: str | bytes | None = None,
    *,
    sk: str = SK,
    date: str = DATE,
) -> SignedRequest:
    """Sign with the official signer, then rebuild the request as the server would receive it."""
    header_params = {
        "User-Agent": "huaweicloud-usdk-python/3.0",
        "Content-Type": "application/json",
        "X-Project-Id": "proj",
        "X-Sdk-Date": date,
    }
    header_params.update(headers or {})
    sdk = SdkRequest(
        method=method,
        schema="https",
        host=HOST,
        resource_path=resource_path,
        query_params=list(query or []),
        header_params=header_params,
        body=body,
    )
    Signer(BasicCredentials(AK, sk)).sign(sdk)
    wire = URL(requote_uri(sdk.url), encoded=True)  # what `requests` puts on the wire
    # The signer leaves header values as UTF-8 bytes seen through latin-1; servers decode UTF-8.
    received = {k: str(v).encode("iso-8859-1").decode("utf-8") for k, v in sdk.header_params.items()}
    raw_body = sdk.body if isinstance(sdk.body, bytes) else b""
    return SignedRequest(method, wire.raw_path, list(wire.query.items()), received, raw_body)


def with_headers(req: SignedRequest, **changes: str | None) -> SignedRequest:
    headers = dict(req.headers)
    for name, value in changes.items():
        name = name.replace("_", "-")
        for existing in [k for k in headers if k.lower() == name.lower()]:
            del headers[existing]
        if value is not None:
            headers[name] = value
    return replace(req, headers=headers)


def rejected(req: SignedRequest, *, sk: str = SK, now: datetime = NOW, **kw: Any) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verify(req, sk, now, **kw)
    return info.value


# --- accepted requests ---------------------------------------------------------------------


def test_get_with_encoded_and_repeated_query() -> None:
    query: list[tuple[str, Any]] = [
        ("name", "a b+c/é&x=y~-._*"),
        ("tag", "v2"),
        ("tag", "v10"),
        ("filter", "namespace::ns|center::self"),
        ("empty", ""),
        ("flag", True),
        ("limit", 10),
        ("ids", ["b", "a", "c d"]),
    ]
    req = sdk_sign("GET", "/v2/manage/repos", query)
    assert ("tag", "v10") in req.query and ("flag", "true") in req.query
    verify(req, SK, NOW)


def test_query_order_on_the_wire_does_not_matter() -> None:
    req = sdk_sign("GET", "/v2/manage/repos", [("b", "2"), ("a", "1"), ("a", "0")])
    verify(replace(req, query=list(reversed(req.query))), SK, NOW)


def test_post_with_json_body() -> None:
    body = json.dumps({"namespace": "group", "é": [1, 2]})
    req = sdk_sign("POST", "/v2/manage/namespaces", body=body)
    assert req.body == body.encode()
    verify(req, SK, NOW)


@pytest.mark.parametrize(
    "resource_path",
    [
        "/v2/manage/namespaces/ns/repos/a%24b/tags",  # what SwrClient sends for repository "a$b"
        "/v2/manage/namespaces/ns/repos/a$b/tags",  # a literal "$" on the wire
        "/v2/manage/namespaces/ns/repos/a%24b%2Fc%20d%2Be/tags",
        "/v2/manage/namespaces/",
        "/v2/manage/namespaces/ns/",
        "/",
    ],
)
def test_paths(resource_path: str) -> None:
    verify(sdk_sign("DELETE", resource_path), SK, NOW)


def test_dollar_and_percent24_canonicalise_alike() -> None:
    req = sdk_sign("GET", "/v2/manage/namespaces/ns/repos/a%24b/tags")
    verify(replace(req, path="/v2/manage/namespaces/ns/repos/a$b/tags"), SK, NOW)


def test_trailing_slash_is_not_covered_by_the_signature() -> None:
    # The SDK appends "/" to every canonical URI, so "/x" and "/x/" sign identically.
    req = sdk_sign("GET", "/v2/manage/namespaces")
    verify(replace(req, path="/v2/manage/namespaces/"), SK, NOW)


def test_unsigned_payload_for_non_json_content() -> None:
    req = sdk_sign("PUT", "/v2/blob", headers={"Content-Type": "application/octet-stream"}, body=b"\x00\x01")
    assert req.header("x-sdk-content-sha256") == "UNSIGNED-PAYLOAD"
    verify(req, SK, NOW)
    assert "UNSIGNED-PAYLOAD" in rejected(req, allow_unsigned_payload=False).message


def test_non_ascii_signed_header() -> None:
    verify(sdk_sign("GET", "/v2/x", headers={"X-Note": "  héllo wörld  "}), SK, NOW)


def test_clock_skew_within_window() -> None:
    req = sdk_sign("GET", "/v2/x")
    verify(req, SK, NOW + timedelta(minutes=15))
    verify(req, SK, NOW - timedelta(minutes=15))
    verify(req, SK, NOW.replace(tzinfo=None))  # naive "now" is UTC


def test_our_signer_matches_the_sdk() -> None:
    req = sdk_sign("POST", "/v2/a%24b", [("q", "1 2")], body="{}")
    auth = parse_authorization(req.headers["Authorization"])
    assert auth.access_key == AK
    assert auth.signed_headers == ("content-type", "host", "user-agent", "x-project-id", "x-sdk-date")
    ours = sign(SK, string_to_sign(canonical_request(req, auth.signed_headers), DATE))
    assert ours == auth.signature


# --- rejected requests ---------------------------------------------------------------------


def test_tampered_body() -> None:
    req = sdk_sign("POST", "/v2/manage/namespaces", body='{"namespace": "a"}')
    err = rejected(replace(req, body=b'{"namespace": "b"}'))
    assert err.code == CODE_BAD_SIGNATURE and "signature mismatch" in err.message


def test_lying_content_hash_header() -> None:
    body = b'{"namespace": "a"}'
    declared = hashlib.sha256(body).hexdigest()
    req = sdk_sign("POST", "/v2/ns", headers={"X-Sdk-Content-Sha256": declared}, body=body)
    verify(req, SK, NOW)
    assert "does not match" in rejected(replace(req, body=b'{"namespace": "evil"}')).message


def test_tampered_path_query_method_and_header() -> None:
    req = sdk_sign("GET", "/v2/manage/namespaces/ns/repos/a%24b/tags", [("limit", "10")])
    for bad in (
        replace(req, path="/v2/manage/namespaces/ns/repos/a%24c/tags"),
        replace(req, path="/v2/manage/namespaces/ns/repos/a%2524b/tags"),
        replace(req, query=[("limit", "11")]),
        replace(req, query=[*req.query, ("extra", "1")]),
        replace(req, method="DELETE"),
        with_headers(req, x_project_id="other"),
        with_headers(req, host="evil.example.com"),
    ):
        assert "signature mismatch" in rejected(bad).message


def test_wrong_secret() -> None:
    req = sdk_sign("GET", "/v2/x", sk="not-the-secret")
    assert rejected(req).code == CODE_BAD_SIGNATURE


@pytest.mark.parametrize("offset", [timedelta(minutes=-16), timedelta(minutes=16)])
def test_stale_and_future_dates(offset: timedelta) -> None:
    date = (NOW + offset).strftime("%Y%m%dT%H%M%SZ")
    err = rejected(sdk_sign("GET", "/v2/x", date=date))
    assert err.code == CODE_CLOCK_SKEW
    assert "outside ±15 minutes" in err.message


def test_missing_authorization() -> None:
    err = rejected(with_headers(sdk_sign("GET", "/v2/x"), authorization=None))
    assert "missing Authorization" in err.message


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("", "missing Authorization"),
        ("Bearer abc", "unsupported signing algorithm"),
        ("SDK-HMAC-SM3 Access=a, SignedHeaders=host, Signature=" + "0" * 64, "unsupported"),
        ("SDK-HMAC-SHA256", "malformed"),
        ("SDK-HMAC-SHA256 Access=a, SignedHeaders=host", "malformed"),
        ("SDK-HMAC-SHA256 Access=a; SignedHeaders=host; Signature=" + "0" * 64, "malformed"),
        ("SDK-HMAC-SHA256 Access=, SignedHeaders=host, Signature=" + "0" * 64, "malformed"),
        ("SDK-HMAC-SHA256 Access=a, SignedHeaders=host, Signature=xyz", "64 hex digits"),
        ("SDK-HMAC-SHA256 Access=a, SignedHeaders=host;;x, Signature=" + "0" * 64, "malformed"),
        ("SDK-HMAC-SHA256 Access=a, Access=b, SignedHeaders=host, Signature=" + "0" * 64, "malformed"),
    ],
)
def test_malformed_authorization(value: str, expect: str) -> None:
    err = rejected(with_headers(sdk_sign("GET", "/v2/x"), authorization=value))
    assert err.code == CODE_BAD_SIGNATURE and expect in err.message


@pytest.mark.parametrize(
    ("date", "expect"),
    [(None, "missing X-Sdk-Date"), ("2026-11-22T10:10:10Z", "malformed X-Sdk-Date"), ("20261399T101010Z", "malformed")],
)
def test_missing_or_malformed_date(date: str | None, expect: str) -> None:
    err = rejected(with_headers(sdk_sign("GET", "/v2/x"), x_sdk_date=date))
    assert expect in err.message


def test_signed_header_absent() -> None:
    err = rejected(with_headers(sdk_sign("GET", "/v2/x"), user_agent=None))
    assert "'user-agent'" in err.message and "absent" in err.message


def test_host_must_be_signed() -> None:
    req = sdk_sign("GET", "/v2/x")
    signed = ("content-type", "x-project-id", "x-sdk-date")
    signature = sign(SK, string_to_sign(canonical_request(req, signed), DATE))
    auth = f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    err = rejected(with_headers(req, authorization=auth))
    assert "host" in err.message and "SignedHeaders" in err.message


# --- over HTTP with the official SwrClient ------------------------------------------------

ADMIN = Principal(user_id="u-1", user_name="admin", access_key=AK)


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    seen: list[Any] = field(default_factory=list)
    skew: timedelta = timedelta(0)  # added to the server's clock

    def swr(self, ak: str = AK, sk: str = SK) -> SwrClient:
        endpoint = f"http://127.0.0.1:{self.client.server.port}"
        credentials = BasicCredentials(ak, sk, "proj")
        return SwrClient.new_builder().with_credentials(credentials).with_endpoint(endpoint).build()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async def regions(request: web.Request) -> web.Response:
        h.seen.append(principal_of(request))
        return web.json_response([])

    async def tags(request: web.Request) -> web.Response:
        h.seen.append((request.match_info["repo"], dict(request.query)))
        return web.json_response([])

    async def create_namespace(request: web.Request) -> web.Response:
        h.seen.append(await request.json())  # the middleware already read the body
        return web.Response(status=201)

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    resolver = StaticKeyResolver.of(
        KeyRecord(AK, SK, ADMIN, enabled=True),
        KeyRecord("DISABLEDKEY", SK, Principal("u-2", "old", "DISABLEDKEY"), enabled=False),
    )
    middleware = aksk_middleware(resolver, clock=lambda: datetime.now(UTC) + h.skew)
    app = web.Application(middlewares=[middleware])
    app.router.add_get("/v2/manage/regions", regions)
    app.router.add_get("/v2/manage/namespaces/{ns}/repos/{repo}/tags", tags)
    app.router.add_post("/v2/manage/namespaces", create_namespace)
    app.router.add_get("/v2/ping", ping)
    app.router.add_get("/healthz", ping)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        h = Harness(client)
        yield h


async def test_sdk_client_is_accepted(harness: Harness) -> None:
    sdk = harness.swr()
    await asyncio.to_thread(sdk.list_sync_regions, ListSyncRegionsRequest())
    tags = ListRepositoryTagsRequest(namespace="ns", repository="a$b", limit="10", tag="v1 +é&x")
    await asyncio.to_thread(sdk.list_repository_tags, tags)
    body = CreateNamespaceRequestBody(namespace="group")
    await asyncio.to_thread(sdk.create_namespace, CreateNamespaceRequest(body=body))
    assert harness.seen == [ADMIN, ("a$b", {"limit": "10", "tag": "v1 +é&x"}), {"namespace": "group"}]


@pytest.mark.parametrize(
    ("ak", "sk", "code"),
    [(AK, "wrong", CODE_BAD_SIGNATURE), ("NOSUCHKEY", SK, CODE_UNKNOWN_KEY), ("DISABLEDKEY", SK, CODE_UNKNOWN_KEY)],
)
async def test_sdk_client_rejected(harness: Harness, ak: str, sk: str, code: str) -> None:
    with pytest.raises(ClientRequestException) as info:
        await asyncio.to_thread(harness.swr(ak, sk).list_sync_regions, ListSyncRegionsRequest())
    assert info.value.status_code == 401
    assert info.value.error_code == code
    assert harness.seen == []


async def test_sdk_client_clock_skew(harness: Harness) -> None:
    harness.skew = timedelta(minutes=20)
    with pytest.raises(ClientRequestException) as info:
        await asyncio.to_thread(harness.swr().list_sync_regions, ListSyncRegionsRequest())
    assert info.value.status_code == 401
    assert info.value.error_code == CODE_CLOCK_SKEW
    assert "outside ±15 minutes" in info.value.error_msg


async def test_unsigned_and_unprotected(harness: Harness) -> None:
    client = harness.client
    resp = await client.get("/v2/ping")
    assert resp.status == 401
    assert await resp.json() == {
        "error_code": CODE_BAD_SIGNATURE,
        "error_msg": "missing Authorization header; sign the request with AK/SK (SDK-HMAC-SHA256)",
    }
    resp = await client.get("/v2/ping", headers={"Authorization": "SDK-HMAC-SHA256 nonsense"})
    assert resp.status == 401 and "malformed" in (await resp.json())["error_msg"]
    resp = await client.get("/healthz")
    assert resp.status == 200
