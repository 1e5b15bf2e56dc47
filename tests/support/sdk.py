"""The official huaweicloudsdkswr client pointed at a running service, and calling it off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkswr.v2 import SwrClient

from tests.support.service import ADMIN_AK, ADMIN_SK, RunningService


def sdk(service: RunningService, ak: str = ADMIN_AK, sk: str = ADMIN_SK) -> Any:
    """An ``SwrClient`` signing with ``ak``/``sk`` (the admin key by default)."""
    credentials = BasicCredentials(ak, sk, "default")
    return SwrClient.new_builder().with_credentials(credentials).with_endpoint(service.url).build()


async def call(client: Any, method: str, request: Any) -> Any:
    """``client.method(request)`` in a thread: the SDK blocks, the service runs in this loop."""
    return await asyncio.to_thread(getattr(client, method), request)
