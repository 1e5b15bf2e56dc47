"""The copy engine under faults: a ``FaultyProxy`` in front of a real Distribution registry injects
5xx/429 answers and connection resets; interrupted chunked uploads resume from a ``ResumeStore``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support import oci
from tests.support.faulty_proxy import FaultyProxy
from tests.support.services import DistributionRegistry
from workers.replication.copy import copy_image
from workers.replication.errors import RetryPolicy, TransientRegistryError
from workers.replication.registry import RegistryClient
from workers.replication.resume import MemoryResumeStore, ResumeKey
from workers.replication.uploads import UploadState, UploadTuning

KiB = 1024
CHUNK = 128 * KiB
TUNING = UploadTuning(monolithic_max=256 * KiB, chunk_size=CHUNK)
FAST_RETRY = RetryPolicy(attempts=4, initial_s=0.01, max_s=0.05)
AUTH = ("copier", "s3cret")
UPLOAD_PATH = r"/blobs/uploads/[0-9a-f-]{36}"


@pytest.fixture(scope="module")
def registry_a() -> Iterator[DistributionRegistry]:
    with DistributionRegistry() as registry:
        yield registry


@pytest.fixture(scope="module")
def registry_b() -> Iterator[DistributionRegistry]:
    with DistributionRegistry(auth=AUTH) as registry:
        yield registry


@pytest.fixture
async def proxy_a(registry_a: DistributionRegistry) -> AsyncIterator[FaultyProxy]:
    async with FaultyProxy(registry_a.url) as proxy:
        yield proxy


@pytest.fixture
async def proxy_b(registry_b: DistributionRegistry) -> AsyncIterator[FaultyProxy]:
    async with FaultyProxy(registry_b.url) as proxy:
        yield proxy


@pytest.fixture
async def src(proxy_a: FaultyProxy) -> AsyncIterator[RegistryClient]:
    async with RegistryClient(proxy_a.url, tuning=TUNING, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
async def dst(proxy_b: FaultyProxy) -> AsyncIterator[RegistryClient]:
    async with RegistryClient(proxy_b.url, username=AUTH[0], password=AUTH[1], tuning=TUNING, retry=FAST_RETRY) as c:
        yield c


class SimulatedCrash(Exception):
    pass


def repo() -> str:
    return f"faults/r{uuid.uuid4().hex[:8]}"


def _start(exchange_path: str) -> int:
    """Index of the first byte a PATCH carried, from the ``Content-Range`` it sent."""
    return int(exchange_path.split("-")[0])


async def test_copy_completes_through_503s_and_connection_resets(
    registry_a: DistributionRegistry, registry_b: DistributionRegistry, proxy_b: FaultyProxy,
    src: RegistryClient, dst: RegistryClient,
) -> None:  # fmt: skip
    name = repo()
    image = await oci.push_image(registry_a.url, name, "v1", layers=[100 * KiB, 600 * KiB])
    proxy_b.fail(2, status=503, method="POST", path=r"/blobs/uploads/$")
    proxy_b.fail(2, status=503, method="PUT", path="/manifests/")
    proxy_b.reset(method="PATCH", path=UPLOAD_PATH, after_bytes=50 * KiB, skip=2)  # third chunk, mid-body
    small_layer = image.layer_digests[0]
    proxy_b.reset(method="PUT", path=rf"{UPLOAD_PATH}\?.*digest={small_layer}", after_bytes=30 * KiB)  # monolithic

    result = await copy_image(src, name, "v1", dst, name, "v1", override=False)

    assert result.status == "success"
    copied = await oci.get_manifest(registry_b.url, name, "v1", auth=AUTH)
    assert copied is not None and copied[0] == image.manifest and copied[2] == image.digest
    statuses = [e.status for e in proxy_b.matching("PUT", "/manifests/")]
    assert statuses == [503, 503, 201]
    assert [e.status for e in proxy_b.log if e.fault and e.fault.startswith("status")] == [503] * 4
    resets = [e for e in proxy_b.log if e.fault and e.fault.startswith("reset")]
    assert len(resets) == 2 and all(e.status is None for e in resets)
    # The reset chunk left part of itself on the registry, so its session could not be resumed:
    # Distribution refuses the (now stale) signed state and the blob was uploaded from scratch.
    stale = [e for e in proxy_b.matching("GET", UPLOAD_PATH) if e.status == 404]
    assert len(stale) == 1
    for layer in image.layer_digests:
        assert await dst.blob_exists(name, layer)


async def test_download_reset_resumes_the_source_with_a_range_request(
    registry_a: DistributionRegistry, proxy_a: FaultyProxy, src: RegistryClient, dst: RegistryClient,
    proxy_b: FaultyProxy,
) -> None:  # fmt: skip
    name = repo()
    image = await oci.push_image(registry_a.url, name, "v1", layers=[900 * KiB])
    layer = image.layer_digests[0]
    proxy_a.reset(method="GET", path=f"/blobs/{layer}", after_bytes=300 * KiB, during="response")

    result = await copy_image(src, name, "v1", dst, name, "v1", override=False)

    assert result.status == "success" and await dst.blob_exists(name, layer)
    downloads = proxy_a.matching("GET", f"/blobs/{layer}")
    assert len(downloads) == 2 and downloads[0].status is None
    resumed_at = int(downloads[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert resumed_at > 0 and resumed_at % CHUNK == 0
    # No chunk was sent twice: every PATCH starts where the previous one ended.
    starts = [_start(e.content_range or "") for e in proxy_b.matching("PATCH")]
    assert starts == [n * CHUNK for n in range(len(starts))] and len(starts) == -(-900 * KiB // CHUNK)


async def test_interrupted_chunked_upload_resumes_without_resending_finished_chunks(
    registry_a: DistributionRegistry, proxy_a: FaultyProxy, proxy_b: FaultyProxy,
    src: RegistryClient, dst: RegistryClient,
) -> None:  # fmt: skip
    name = repo()
    size = 1000 * KiB  # 8 chunks
    image = await oci.push_image(registry_a.url, name, "v1", layers=[size])
    layer = image.layer_digests[0]
    store = MemoryResumeStore()
    # After 3 chunks the destination becomes unreachable for uploads: the connection is cut
    # before anything reaches the registry, until the copy gives up.
    proxy_b.reset(100, method="PATCH", path=UPLOAD_PATH, after_bytes=0, skip=3)

    with pytest.raises(TransientRegistryError):
        await copy_image(src, name, "v1", dst, name, "v1", override=False, resume=store)

    key = ResumeKey(dst.base_url, name, layer)
    saved = await store.get(key)
    assert saved is not None and saved.offset == 3 * CHUNK
    proxy_b.clear()
    proxy_a.log.clear()
    proxy_b.log.clear()

    result = await copy_image(src, name, "v1", dst, name, "v1", override=False, resume=store)

    assert result.status == "success" and result.bytes_transferred == size - 3 * CHUNK
    assert (result.blobs_copied, result.blobs_skipped) == (1, 1)  # the config arrived the first time
    status_queries = proxy_b.matching("GET", UPLOAD_PATH)
    assert [e.status for e in status_queries] == [204]
    patches = proxy_b.matching("PATCH")
    assert [_start(e.content_range or "") for e in patches] == [n * CHUNK for n in range(3, 8)]
    assert all(e.status == 202 for e in patches)
    assert proxy_a.matching("GET", f"/blobs/{layer}")[0].headers["Range"] == f"bytes={3 * CHUNK}-"
    assert await store.get(key) is None  # forgotten once committed
    copied = await oci.get_manifest(proxy_b.url, name, "v1", auth=AUTH)
    assert copied is not None and copied[0] == image.manifest


async def test_crash_between_chunks_resumes_from_the_persisted_state(
    registry_a: DistributionRegistry, proxy_b: FaultyProxy, src: RegistryClient, dst: RegistryClient
) -> None:
    """A process dying right after persisting a chunk's state (the store raising stands in for it)."""
    name = repo()
    image = await oci.push_image(registry_a.url, name, "v1", layers=[700 * KiB])

    class CrashingStore(MemoryResumeStore):
        async def put(self, key: ResumeKey, state: UploadState) -> None:
            await super().put(key, state)
            if state.offset >= 2 * CHUNK:
                raise SimulatedCrash()

    store = CrashingStore()
    with pytest.raises(SimulatedCrash):
        await copy_image(src, name, "v1", dst, name, "v1", override=False, resume=store)
    proxy_b.log.clear()
    resumed = MemoryResumeStore()
    resumed.states = dict(store.states)

    result = await copy_image(src, name, "v1", dst, name, "v1", override=False, resume=resumed)

    assert result.status == "success"
    starts = [_start(e.content_range or "") for e in proxy_b.matching("PATCH")]
    assert starts == [2 * CHUNK, 3 * CHUNK, 4 * CHUNK, 5 * CHUNK]
    assert await dst.blob_exists(name, image.layer_digests[0])


async def test_retry_after_of_429_is_honoured(
    registry_a: DistributionRegistry, proxy_a: FaultyProxy, src: RegistryClient
) -> None:
    name = repo()
    image = await oci.push_image(registry_a.url, name, "v1", layers=[1000])
    proxy_a.fail(1, status=429, method="GET", path="/manifests/", headers={"Retry-After": "1"})

    started = time.monotonic()
    manifest = await src.get_manifest(name, "v1")

    assert manifest.digest == image.digest
    assert 0.95 <= time.monotonic() - started < 3  # the backoff alone would be ~0.01 s
    assert [e.status for e in proxy_a.matching("GET", "/manifests/")] == [429, 200]


async def test_retry_after_beyond_the_limit_is_raised_not_slept(
    registry_a: DistributionRegistry, proxy_a: FaultyProxy, src: RegistryClient
) -> None:
    name = repo()
    await oci.push_image(registry_a.url, name, "v1", layers=[1000])
    proxy_a.fail(1, status=503, method="GET", path="/manifests/", headers={"Retry-After": "3600"})

    started = time.monotonic()
    with pytest.raises(TransientRegistryError) as caught:
        await src.get_manifest(name, "v1")

    assert caught.value.status == 503 and caught.value.retry_after == 3600
    assert time.monotonic() - started < 1


async def test_transient_errors_are_retried_a_bounded_number_of_times(
    registry_a: DistributionRegistry, proxy_a: FaultyProxy, src: RegistryClient
) -> None:
    name = repo()
    await oci.push_image(registry_a.url, name, "v1", layers=[1000])
    proxy_a.fail(10, status=502, method="HEAD", path="/manifests/")
    with pytest.raises(TransientRegistryError):
        await src.head_manifest(name, "v1")
    assert len(proxy_a.matching("HEAD")) == FAST_RETRY.attempts

    proxy_a.clear()
    proxy_a.reset(2, method="HEAD", path="/manifests/")  # connection reset before any answer
    assert await src.head_manifest(name, "v1") is not None
