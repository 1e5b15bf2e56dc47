"""Standard Webhooks signatures for outgoing webhook requests.

Spec: https://www.standardwebhooks.com/. The signed content is ``"{msg_id}.{timestamp}.{body}"``;
the signature is HMAC-SHA256 keyed with the secret's bytes (the base64 after ``whsec_``), sent
as ``v1,<base64>``. While a secret is being rotated both are active and the
``webhook-signature`` header carries one signature per secret, space-separated, so a receiver
holding either secret accepts the request.

Pure and non-blocking; the delivery shell calls ``webhook_headers`` once per attempt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from secrets import token_bytes

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# The spec asks for secrets of 24 to 64 bytes; new ones get 32.
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 64
_NEW_SECRET_BYTES = 32


def new_signing_secret() -> str:
    """A fresh secret, ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(_NEW_SECRET_BYTES)).decode("ascii")


def valid_secret(secret: str) -> bool:
    """Whether ``secret`` is ``whsec_<base64>`` of 24 to 64 bytes."""
    return _secret_bytes(secret) is not None


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message. Raises ``ValueError`` for a malformed secret."""
    key = _secret_bytes(secret)
    if key is None:
        raise ValueError("signing secret: expected whsec_ and the base64 of 24 to 64 bytes")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def webhook_headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery attempt, signed with every secret.

    ``timestamp`` is the attempt's Unix time in seconds (receivers reject stale ones, so it is
    taken per attempt; ``msg_id`` stays the same across retries). Raises ``ValueError`` when
    ``secrets`` is empty or one of them is malformed.
    """
    if not secrets:
        raise ValueError("signing secrets: at least one is required")
    if not msg_id:
        raise ValueError("webhook-id: must not be empty")
    signatures = [signature(secret, msg_id, timestamp, body) for secret in secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


def _secret_bytes(secret: str) -> bytes | None:
    if not secret.startswith(SECRET_PREFIX):
        return None
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES else None
