"""Bearer token auth against a real Distribution registry in ``auth.token`` mode.

The token server is written here (Distribution does not ship one): it checks Basic credentials,
grants every scope asked for and signs an ES256 JWT whose ``x5c`` header carries a self-signed
certificate that the registry trusts through ``rootcertbundle``. This exercises the real
challenges Distribution sends, including the two-scope challenge of a cross-repository mount.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.support import oci
from tests.support.services import DistributionRegistry, free_port
from workers.replication.copy import copy_image
from workers.replication.errors import RetryPolicy, Unauthorized
from workers.replication.registry import RegistryClient
from workers.replication.uploads import UploadTuning

KiB = 1024
SERVICE, ISSUER = "test-registry", "test-token-issuer"
CREDENTIALS = ("robot", "token-pw")
TUNING = UploadTuning(monolithic_max=256 * KiB, chunk_size=128 * KiB)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens (distribution token spec) for ``CREDENTIALS``; logs the scopes asked."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.requests: list[list[str]] = []
        app = web.Application()
        app.router.add_get("/token", self._token)
        self.server = TestServer(app, host="127.0.0.1", port=free_port())

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/token"

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    async def _token(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}, status=401)
        scopes = request.query.getall("scope", [])
        self.requests.append(scopes)
        return web.json_response({"token": self.sign(scopes), "expires_in": 300})

    def sign(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()
        header = {"typ": "JWT", "alg": "ES256", "x5c": [der]}
        claims = {"iss": ISSUER, "sub": CREDENTIALS[0], "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class TokenAuthRegistry(DistributionRegistry):
    """Distribution with ``auth.token`` pointing at a ``TokenServer``."""

    def __init__(self, tokens: TokenServer):
        super().__init__()
        self.tokens = tokens

    def _config(self) -> dict[str, Any]:
        bundle = self._dir / "token-ca.pem"
        bundle.write_bytes(self.tokens.certificate_pem())
        config = super()._config()
        config["auth"] = {"token": {"realm": self.tokens.realm, "service": SERVICE, "issuer": ISSUER,
                                    "rootcertbundle": str(bundle)}}  # fmt: skip
        return config


@pytest.fixture
async def token_server() -> AsyncIterator[TokenServer]:
    tokens = TokenServer()
    await tokens.server.start_server()
    yield tokens
    await tokens.server.close()


@pytest.fixture(scope="module")
def anonymous_registry() -> Iterator[DistributionRegistry]:
    with DistributionRegistry() as registry:
        yield registry


@pytest.fixture
def token_registry(token_server: TokenServer) -> Iterator[TokenAuthRegistry]:
    with TokenAuthRegistry(token_server) as registry:
        yield registry


def _client(url: str, password: str = CREDENTIALS[1]) -> RegistryClient:
    retry = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)
    return RegistryClient(url, username=CREDENTIALS[0], password=password, tuning=TUNING, retry=retry)


async def test_copy_into_and_within_a_token_auth_registry(
    anonymous_registry: DistributionRegistry, token_registry: TokenAuthRegistry, token_server: TokenServer
) -> None:
    name = f"lib/t{uuid.uuid4().hex[:8]}"
    image = await oci.push_image(anonymous_registry.url, name, "v1", layers=[40 * KiB, 400 * KiB])
    async with RegistryClient(anonymous_registry.url, tuning=TUNING) as src, _client(token_registry.url) as dst:
        result = await copy_image(src, name, "v1", dst, name, "v1", override=False)
        assert result.blobs_copied == 3
        assert (await dst.get_manifest(name, "v1")).raw == image.manifest
        push_tokens = len(token_server.requests)

        mounted = await copy_image(dst, name, "v1", dst, "team/mirror", "v1", override=False)

    assert mounted.blobs_mounted == 3
    # One token per distinct scope (not per request), the mount asking for both repositories.
    assert token_server.requests[:push_tokens] == [[f"repository:{name}:pull"], [f"repository:{name}:pull,push"]]
    assert token_server.requests[push_tokens:] == [
        ["repository:team/mirror:pull"],
        ["repository:team/mirror:pull,push", f"repository:{name}:pull"],
        ["repository:team/mirror:pull,push"],
    ]


async def test_wrong_password_is_unauthorized(token_registry: TokenAuthRegistry) -> None:
    async with _client(token_registry.url, password="nope") as client:
        with pytest.raises(Unauthorized):
            await client.head_manifest("lib/anything", "v1")
