"""Signed HTTP calls to the service under test, for routes and fields the SDK does not model."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from tests.support.service import ADMIN_AK, ADMIN_SK


async def signed(
    base_url: str, method: str, path: str, body: Any = None, *, ak: str = ADMIN_AK, sk: str = ADMIN_SK
) -> tuple[int, Any]:
    """Sign like the official SDK (SDK-HMAC-SHA256) and send; returns (status, decoded JSON or None)."""
    parts = urlsplit(base_url)
    raw = json.dumps(body).encode() if body is not None else b""
    path_only, _, query = path.partition("?")
    request = SdkRequest(
        method=method,
        schema=parts.scheme,
        host=parts.netloc,
        resource_path=path_only,
        query_params=[tuple(p.split("=", 1)) for p in query.split("&") if p],  # type: ignore[misc]
        header_params={"Content-Type": "application/json", "X-Project-Id": "default"},
        body=raw,
    )
    Signer(BasicCredentials(ak, sk)).sign(request)
    headers = {k: str(v) for k, v in request.header_params.items()}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{base_url}{path}", data=raw or None, headers=headers) as response,
    ):
        text = await response.text()
        return response.status, (json.loads(text) if text else None)
