"""Pure pieces of the copy engine, and the Bearer token flow against a small fake registry.

The fake (``TokenRegistry``) exists because Distribution's token mode needs a JWT-issuing token
server; it follows the distribution token spec closely: a 401 with
``WWW-Authenticate: Bearer realm,service,scope`` for every request lacking a token for its scope,
and a realm answering ``{"token", "expires_in"}`` to Basic credentials with repeated ``scope``
parameters.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st
from tenacity import RetryCallState

from workers.errors import TransientError
from workers.replication.auth import Authenticator, Challenge, bearer_challenge, parse_challenges
from workers.replication.errors import (
    DigestMismatch,
    NotFound,
    RetryPolicy,
    TransientRegistryError,
    Unauthorized,
    error_from_response,
    parse_retry_after,
)
from workers.replication.manifests import OCI_INDEX, OCI_MANIFEST, Descriptor, Manifest, fallback_index, media_type_of
from workers.replication.registry import RegistryClient
from workers.replication.streams import Chunker, held_back_until_verified
from workers.replication.uploads import _offset

# ---------------------------------------------------------------------------------------------- challenges


def test_bearer_challenge_with_commas_inside_quotes() -> None:
    header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    [challenge] = parse_challenges(header)
    assert challenge == Challenge(
        "bearer",
        {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull,push"},
    )
    assert challenge.scopes == ("repository:a/b:pull,push",)


def test_several_challenges_escapes_and_several_scopes() -> None:
    header = (
        'Basic realm="say \\"hi\\"", Bearer realm="http://t/token", '
        'scope="repository:x:pull,push repository:y:pull",error=insufficient_scope'
    )
    basic, bearer = parse_challenges(header)
    assert basic == Challenge("basic", {"realm": 'say "hi"'})
    assert bearer.scopes == ("repository:x:pull,push", "repository:y:pull")
    assert bearer.params["error"] == "insufficient_scope"
    assert bearer_challenge(header) == bearer
    assert bearer_challenge('Basic realm="registry"') is None
    assert bearer_challenge(None) is None


# ---------------------------------------------------------------------------------------------- errors


def test_error_taxonomy_from_answers() -> None:
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode()
    missing = error_from_response(404, body, {}, "GET x")
    assert isinstance(missing, NotFound) and missing.code == "MANIFEST_UNKNOWN"
    assert isinstance(error_from_response(401, b"", {}, "x"), Unauthorized)
    limited = error_from_response(429, b"slow down", {"Retry-After": "7"}, "x")
    assert isinstance(limited, TransientRegistryError) and isinstance(limited, TransientError)
    assert limited.retry_after == 7
    assert isinstance(error_from_response(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}', {}, "x"), DigestMismatch)


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_retry_policy_waits_for_retry_after_else_backs_off_with_jitter() -> None:
    policy = RetryPolicy(attempts=5, initial_s=1, max_s=4)

    def state(attempt: int, exc: BaseException) -> RetryCallState:
        call = RetryCallState(policy.retrying(), None, (), {})
        call.attempt_number = attempt
        call.set_exception((type(exc), exc, None))
        return call

    assert policy.wait_s(state(1, TransientRegistryError(429, None, "x", retry_after=3))) == 3
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (6, 4)]:
        wait = policy.wait_s(state(attempt, TransientRegistryError(503, None, "x")))
        assert ceiling / 2 <= wait <= ceiling


# ---------------------------------------------------------------------------------------------- manifests


def test_media_type_comes_from_content_type_else_the_document() -> None:
    raw = json.dumps({"mediaType": OCI_INDEX}).encode()
    assert media_type_of(raw, f"{OCI_MANIFEST}; charset=utf-8") == OCI_MANIFEST
    assert media_type_of(raw, "application/json") == OCI_INDEX


def test_foreign_layers_are_not_copied() -> None:
    document = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "c", "digest": "sha256:" + "1" * 64, "size": 2},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": "sha256:" + "2" * 64,
             "size": 9, "urls": ["https://mcr.example/layer"]},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + "3" * 64, "size": 5},
        ],
    }  # fmt: skip
    manifest = Manifest(OCI_MANIFEST, "sha256:x", json.dumps(document).encode())
    assert [d.digest[-1] for d in manifest.blobs()] == ["1", "3"]


def test_fallback_index_merges_new_referrers_only() -> None:
    first = Descriptor.parse({"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 10})
    second = Descriptor.parse({"mediaType": OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 20})
    created = fallback_index(None, [first])
    assert created is not None and [d.digest for d in created.children()] == [first.digest]
    assert fallback_index(created, [first]) is None
    merged = fallback_index(created, [first, second])
    assert merged is not None and [d.digest for d in merged.children()] == [first.digest, second.digest]


# ---------------------------------------------------------------------------------------------- uploads


def test_upload_range_header_to_offset() -> None:
    assert _offset("0-1048575", hint=0) == 1024 * 1024
    assert _offset("0-0", hint=0) == 0  # Distribution's answer for an empty session
    assert _offset("0-0", hint=1) == 1  # ... and the spec's for one byte
    assert _offset(None, hint=42) == 42


async def _pieces(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    edges = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for start, end in itertools.pairwise(edges):
        if end > start:
            yield data[start:end]


@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=0, max_value=3000)), size=st.integers(1, 700))
async def test_chunks_are_full_sized_except_the_last(data: bytes, cuts: list[int], size: int) -> None:
    chunks = Chunker(_pieces(data, cuts), size)
    taken = []
    while chunk := await chunks.take():
        taken.append(chunk)
    await chunks.close()
    assert b"".join(taken) == data
    assert all(len(c) == size for c in taken[:-1]) and all(0 < len(c) <= size for c in taken)


@given(data=st.binary(min_size=1, max_size=2000), cuts=st.lists(st.integers(min_value=0, max_value=2000)))
async def test_the_last_piece_is_held_back_until_the_digest_is_checked(data: bytes, cuts: list[int]) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    passed = [p async for p in held_back_until_verified(_pieces(data, cuts), digest, len(data))]
    assert b"".join(passed) == data

    released: list[bytes] = []
    with pytest.raises(DigestMismatch):
        async for piece in held_back_until_verified(_pieces(data, cuts), "sha256:" + "0" * 64, len(data)):
            released.append(piece)
    assert len(b"".join(released)) < len(data)


# ---------------------------------------------------------------------------------------------- bearer tokens


class TokenRegistry:
    """A fake registry in token mode (see the module docstring)."""

    def __init__(self, credentials: tuple[str, str], lifetime: int = 300):
        self.basic = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        self.lifetime = lifetime
        self.grants: dict[str, set[str]] = {}
        self.token_requests: list[list[str]] = []
        self.challenged: list[str] = []
        self.manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
        self.app = web.Application()
        self.app.router.add_get("/token", self._token)
        self.app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", self._manifest)
        self.server = TestServer(self.app, host="127.0.0.1")

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.basic or request.query.get("service") != "fake-registry":
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}, status=401)
        scopes = request.query.getall("scope", [])
        self.token_requests.append(scopes)
        token = f"token-{len(self.token_requests)}"
        self.grants[token] = set(scopes)
        return web.json_response({"token": token, "expires_in": self.lifetime, "issued_at": "2025-01-01T00:00:00Z"})

    async def _manifest(self, request: web.Request) -> web.Response:
        scope = f"repository:{request.match_info['name']}:pull"
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if scope not in self.grants.get(token, set()):
            self.challenged.append(scope)
            realm = str(self.server.make_url("/token"))
            challenge = f'Bearer realm="{realm}",service="fake-registry",scope="{scope}"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        return web.Response(body=self.manifest, headers={"Content-Type": OCI_INDEX, "Docker-Content-Digest": digest})


@pytest.fixture
async def token_registry() -> AsyncIterator[TokenRegistry]:
    registry = TokenRegistry(("robot", "pw"))
    await registry.server.start_server()
    yield registry
    await registry.server.close()


async def test_bearer_challenge_is_answered_once_and_the_token_reused(token_registry: TokenRegistry) -> None:
    url = str(token_registry.server.make_url("/")).rstrip("/")
    async with RegistryClient(url, username="robot", password="pw") as client:
        first = await client.get_manifest("team/app", "v1")
        again = await client.get_manifest("team/app", "v2")
        assert await client.head_manifest("team/app", "v3") == first.digest == again.digest
        assert token_registry.challenged == ["repository:team/app:pull"]
        assert token_registry.token_requests == [["repository:team/app:pull"]]

        # Known to use tokens now: another repository's token is fetched up front, without a 401.
        await client.get_manifest("team/other", "v1")
        assert token_registry.challenged == ["repository:team/app:pull"]
        assert token_registry.token_requests[-1] == ["repository:team/other:pull"]


async def test_token_endpoint_refusing_credentials_is_unauthorized(token_registry: TokenRegistry) -> None:
    url = str(token_registry.server.make_url("/")).rstrip("/")
    async with RegistryClient(url, username="robot", password="wrong") as client:
        with pytest.raises(Unauthorized):
            await client.get_manifest("team/app", "v1")


async def test_tokens_are_renewed_before_they_expire(token_registry: TokenRegistry) -> None:
    now = [1000.0]
    auth = Authenticator("robot", "pw", clock=lambda: now[0])
    realm = str(token_registry.server.make_url("/token"))
    challenge = Challenge("bearer", {"realm": realm, "service": "fake-registry", "scope": "repository:a:pull"})
    async with aiohttp.ClientSession() as http:
        await auth.answer(http, challenge, "repository:a:pull")
        headers: list[dict[str, Any]] = [await auth.header(http, "repository:a:pull")]
        now[0] += 285  # 300 s token, renewed 10 s early
        headers.append(await auth.header(http, "repository:a:pull"))
        now[0] += 10
        headers.append(await auth.header(http, "repository:a:pull"))
    assert [h["Authorization"] for h in headers] == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]
    assert auth.token_fetches == 2
