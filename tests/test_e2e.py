"""End to end: a real Distribution registry notifies the service, the official SDK reads tags.

registry push ──► ingress ──► broker ──► inventory worker ──► Postgres ──► SWR API ──► huaweicloudsdkswr
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkswr.v2 import ListReposDetailsRequest, ListRepositoryTagsRequest, SwrClient

from tests.support import oci
from tests.support.service import (
    ADMIN_AK,
    ADMIN_SK,
    INGRESS_TOKEN,
    RunningService,
    running_service,
    service_settings,
    wait_for,
)
from tests.support.services import DistributionRegistry, KafkaBroker, free_port


@pytest.fixture
def listen_port() -> int:
    return free_port()


@pytest.fixture
def registry(listen_port: int) -> Iterator[DistributionRegistry]:
    ingress = f"http://127.0.0.1:{listen_port}/events/distribution"
    with DistributionRegistry(notification_url=ingress, notification_token=INGRESS_TOKEN) as reg:
        yield reg


@pytest.fixture
async def service(
    kafka: KafkaBroker, postgres_url: str, topic_prefix: str, registry: DistributionRegistry, listen_port: int
) -> AsyncIterator[RunningService]:
    settings = service_settings(
        postgres_url,
        kafka.bootstrap,
        topic_prefix,
        listen=f"127.0.0.1:{listen_port}",
        regions={"region-a": {"registry": registry.url, "insecure": True}},
    )
    async with running_service(settings) as running:
        yield running


def sdk_client(service: RunningService, secret: str = ADMIN_SK) -> Any:
    credentials = BasicCredentials(ADMIN_AK, secret, "default")
    return SwrClient.new_builder().with_credentials(credentials).with_endpoint(service.url).build()


async def sdk_tags(client: Any, namespace: str, repository: str) -> dict[str, str]:
    def call() -> dict[str, str]:
        try:
            response = client.list_repository_tags(
                ListRepositoryTagsRequest(namespace=namespace, repository=repository)
            )
        except ClientRequestException as exc:
            if exc.status_code == 404:
                return {}
            raise
        return {tag.tag: tag.digest for tag in response.body}

    return await asyncio.to_thread(call)


async def test_pushed_image_is_listed_through_the_official_sdk(
    service: RunningService, registry: DistributionRegistry
) -> None:
    client = sdk_client(service)
    image = await oci.push_image(registry.url, "team/app", "v1", layers=[2048, 4096])
    index = await oci.push_index(registry.url, "team/app", "multi")
    assert await wait_for(lambda: sdk_tags(client, "team", "app")) is not None

    async def both_tags() -> dict[str, str] | None:
        tags = await sdk_tags(client, "team", "app")
        return tags if len(tags) == 2 else None

    assert await wait_for(both_tags) == {"v1": image.digest, "multi": index.digest}

    repos = await asyncio.to_thread(client.list_repos_details, ListReposDetailsRequest(namespace="team"))
    [repo] = repos.body
    assert (repo.namespace, repo.name, repo.num_images, sorted(repo.tags)) == ("team", "app", 2, ["multi", "v1"])
    assert repo.path == f"{registry.host}/team/app"
    assert repos.content_range == "0-0/1"


async def test_deleting_a_digest_removes_every_tag_on_it(
    service: RunningService, registry: DistributionRegistry
) -> None:
    client = sdk_client(service)
    shared = await oci.push_image(registry.url, "team/web", "a", layers=[512])
    await oci.push_manifest(registry.url, "team/web", "b", shared.manifest, shared.media_type)
    other = await oci.push_image(registry.url, "team/web", "c", layers=[256])

    async def tags_are(expected: dict[str, str]) -> bool:
        return await sdk_tags(client, "team", "web") == expected

    await wait_for(lambda: tags_are({"a": shared.digest, "b": shared.digest, "c": other.digest}))
    assert await oci.delete_manifest(registry.url, "team/web", shared.digest)
    await wait_for(lambda: tags_are({"c": other.digest}))


async def test_unsigned_tampered_and_wrong_secret_requests_get_401(service: RunningService) -> None:
    wrong = sdk_client(service, secret="not-the-secret")
    with pytest.raises(ClientRequestException) as caught:
        await asyncio.to_thread(wrong.list_repos_details, ListReposDetailsRequest())
    assert caught.value.status_code == 401 and caught.value.error_code == "APIGW.0301"
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/v2/manage/repos") as resp:
        assert resp.status == 401
        assert set(await resp.json()) == {"error_code", "error_msg"}
