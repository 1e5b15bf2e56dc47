"""Verification of Huawei Cloud AK/SK request signatures (``SDK-HMAC-SHA256``).

Pure functions, no I/O. ``workers.api.authn`` calls ``authorization_of`` to learn the access
key, looks up its secret, then calls ``verify``; everything here raises ``SignatureError``.

The canonical form mirrors ``huaweicloudsdkcore.signer.signer.Signer`` exactly::

    METHOD \\n CanonicalURI \\n CanonicalQuery \\n CanonicalHeaders \\n SignedHeaders \\n PayloadHash

* CanonicalURI: the path is percent-*decoded*, split on ``/``, each segment re-encoded with
  ``quote(segment, safe="~")`` and a ``/`` appended unless the path already ends in one. So
  ``$`` and ``%24`` canonicalise alike, ``%2F`` counts as a separator, and ``/a`` and ``/a/``
  share a signature.
* CanonicalQuery: decoded ``(name, value)`` pairs sorted by name then value (code points of
  the decoded text), each side encoded with ``quote(s, safe="~")``, joined with ``&``.
* CanonicalHeaders: ``name:value.strip()`` for each signed header in the order the
  ``Authorization`` header lists them, each line ending in ``\\n``.
* PayloadHash: the SHA-256 of an empty body when the body is empty; otherwise the value of
  ``X-Sdk-Content-Sha256`` when present (the SDK sends ``UNSIGNED-PAYLOAD`` for content types
  other than JSON/BSON); otherwise the hex SHA-256 of the body.

The string to sign is ``SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hex sha256 of canonical request>``
and the signature is its hex HMAC-SHA256 keyed with the secret key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
CONTENT_HASH_HEADER = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
DEFAULT_MAX_SKEW = timedelta(minutes=15)

CODE_BAD_SIGNATURE = "APIGW.0301"
"""Missing, malformed or wrong signature."""
CODE_CLOCK_SKEW = "APIGW.0304"
"""``X-Sdk-Date`` too far from the server's clock."""

_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_DATE_RE = re.compile(r"\d{8}T\d{6}Z")
_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")


class AuthenticationError(Exception):
    """A request could not be authenticated; ``code`` is stable, ``message`` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class SignatureError(AuthenticationError):
    """The request's AK/SK signature is missing, malformed, stale or wrong."""


@dataclass(frozen=True)
class SignedRequest:
    """One HTTP request as received.

    ``path`` is the raw, still percent-encoded path without the query; ``query`` holds the
    decoded ``(name, value)`` pairs in any order; ``headers`` is looked up case-insensitively.
    """

    method: str
    path: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes = b""
    _lower: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lower: dict[str, str] = {}
        for name, value in self.headers.items():
            lower.setdefault(name.lower(), value)  # first value wins, like aiohttp's headers[...]
        object.__setattr__(self, "_lower", lower)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        return self._lower.get(name.lower())


@dataclass(frozen=True)
class AuthorizationHeader:
    """The parts of ``Authorization: SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...``."""

    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def _bad(message: str) -> SignatureError:
    return SignatureError(CODE_BAD_SIGNATURE, message)


def parse_authorization(value: str) -> AuthorizationHeader:
    """Split an ``Authorization`` value; raises ``SignatureError`` if it is not SDK-HMAC-SHA256."""
    algorithm, _, rest = value.strip().partition(" ")
    if not algorithm:
        raise _bad("Authorization header is empty")
    if algorithm != ALGORITHM:
        raise _bad(f"unsupported signing algorithm {algorithm[:40]!r}; only {ALGORITHM} is accepted")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep or key not in ("Access", "SignedHeaders", "Signature") or key in parts:
            raise _bad(
                "malformed Authorization header; expected "
                f"'{ALGORITHM} Access=<AK>, SignedHeaders=<h1;h2>, Signature=<hex>'"
            )
        parts[key] = val.strip()
    missing = [k for k in ("Access", "SignedHeaders", "Signature") if not parts.get(k)]
    if missing:
        raise _bad(f"malformed Authorization header; missing or empty: {', '.join(missing)}")
    signed = tuple(parts["SignedHeaders"].split(";"))
    if any(not h.strip() or h != h.strip() for h in signed):
        raise _bad("malformed Authorization header; SignedHeaders has an empty or padded name")
    if not _SIGNATURE_RE.fullmatch(parts["Signature"]):
        raise _bad("malformed Authorization header; Signature must be 64 hex digits")
    return AuthorizationHeader(parts["Access"], signed, parts["Signature"].lower())


def authorization_of(req: SignedRequest) -> AuthorizationHeader:
    """The parsed ``Authorization`` header of ``req``; raises ``SignatureError`` if absent or bad."""
    value = req.header("Authorization")
    if value is None or not value.strip():
        raise _bad(f"missing Authorization header; sign the request with AK/SK ({ALGORITHM})")
    return parse_authorization(value)


def _encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """The SDK's canonical URI of a raw (percent-encoded) path."""
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(query: Iterable[tuple[str, str]]) -> str:
    """The SDK's canonical query string of decoded ``(name, value)`` pairs."""
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query))


def payload_hash(req: SignedRequest) -> str:
    """The payload line of the canonical request; raises ``SignatureError`` for a lying header."""
    if not req.body:
        return EMPTY_SHA256
    declared = req.header(CONTENT_HASH_HEADER)
    if declared is None:
        return hashlib.sha256(req.body).hexdigest()
    declared = declared.strip()
    if declared != UNSIGNED_PAYLOAD and declared.lower() != hashlib.sha256(req.body).hexdigest():
        raise _bad(f"{CONTENT_HASH_HEADER} does not match the SHA-256 of the request body")
    return declared


def canonical_request(req: SignedRequest, signed_headers: Sequence[str]) -> str:
    """The canonical request the client signed; raises ``SignatureError`` for a missing header."""
    lines = []
    for name in signed_headers:
        value = req.header(name)
        if value is None:
            raise _bad(f"header {name!r} is listed in SignedHeaders but absent from the request")
        lines.append(f"{name}:{value.strip()}\n")
    return "\n".join(
        [
            req.method.upper(),
            canonical_uri(req.path),
            canonical_query(req.query),
            "".join(lines),
            ";".join(signed_headers),
            payload_hash(req),
        ]
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    """``SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hex sha256 of the canonical request>``."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def sign(secret_key: str, to_sign: str) -> str:
    """Hex HMAC-SHA256 of ``to_sign`` keyed with ``secret_key``."""
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _request_time(req: SignedRequest) -> tuple[str, datetime]:
    raw = req.header(DATE_HEADER)
    if raw is None or not raw.strip():
        raise _bad(f"missing {DATE_HEADER} header")
    raw = raw.strip()
    try:
        if not _DATE_RE.fullmatch(raw):
            raise ValueError(raw)
        when = datetime.strptime(raw, _DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise _bad(f"malformed {DATE_HEADER} header {raw[:40]!r}; expected UTC like 20260102T150405Z") from None
    return raw, when


def verify(
    req: SignedRequest,
    secret_key: str,
    now: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    *,
    allow_unsigned_payload: bool = True,
) -> None:
    """Check ``req``'s ``SDK-HMAC-SHA256`` signature against ``secret_key``.

    ``now`` is the server's clock (a naive value is taken as UTC). Returns ``None`` when the
    signature is good; raises ``SignatureError`` (code ``APIGW.0301``, or ``APIGW.0304`` when
    ``X-Sdk-Date`` is more than ``max_skew`` away from ``now``) otherwise.
    """
    auth = authorization_of(req)
    signed = [h.lower() for h in auth.signed_headers]
    if "host" not in signed:
        raise _bad("the host header must be listed in SignedHeaders")
    raw_date, when = _request_time(req)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if abs(now - when) > max_skew:
        raise SignatureError(
            CODE_CLOCK_SKEW,
            f"{DATE_HEADER} {raw_date} is outside ±{int(max_skew.total_seconds() // 60)} minutes of "
            f"server time {now.astimezone(UTC).strftime(_DATE_FORMAT)}; check the client clock",
        )
    if not allow_unsigned_payload and req.body and req.header(CONTENT_HASH_HEADER) == UNSIGNED_PAYLOAD:
        raise _bad(f"{CONTENT_HASH_HEADER}: {UNSIGNED_PAYLOAD} is not accepted; sign the body")
    try:
        canonical = canonical_request(req, auth.signed_headers)
        expected = sign(secret_key, string_to_sign(canonical, raw_date))
    except UnicodeEncodeError:
        raise _bad("the request path, query or a signed header is not valid UTF-8") from None
    if not hmac.compare_digest(expected, auth.signature):
        raise _bad("signature mismatch; check the secret key and that the request was not altered")
