"""Many copies at once over shared clients never deadlock on the registries' connection slots.

Chunked uploads hold a source slot while they wait for a destination slot; monolithic uploads
used to hold a destination slot while waiting for a source one. With 8 copies over 8 slots per
registry that hung (7 runs in 8). Both now take the source's slot first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support import oci
from tests.support.services import DistributionRegistry
from workers.replication.copy import copy_image
from workers.replication.registry import RegistryClient
from workers.replication.uploads import UploadTuning

KiB = 1024
COPIES = 8


@pytest.fixture
def registries() -> Iterator[tuple[DistributionRegistry, DistributionRegistry]]:
    with DistributionRegistry() as source, DistributionRegistry() as destination:
        yield source, destination


async def test_eight_concurrent_copies_mixing_monolithic_and_chunked_uploads_finish(
    registries: tuple[DistributionRegistry, DistributionRegistry],
) -> None:
    source, destination = registries
    layers = [1024 * KiB, 64 * KiB] * 4  # chunked (> 256 KiB) and monolithic uploads interleaved
    async with aiohttp.ClientSession() as http:
        pushed = [
            await oci.push_image(source.url, f"dl/img{i}", "v1", layers=layers, session=http) for i in range(COPIES)
        ]
    tuning = UploadTuning(monolithic_max=256 * KiB, chunk_size=128 * KiB)
    async with RegistryClient(source.url, tuning=tuning) as src, RegistryClient(destination.url, tuning=tuning) as dst:
        copies = [copy_image(src, f"dl/img{i}", "v1", dst, f"dl/img{i}", "v1", override=True) for i in range(COPIES)]
        results = await asyncio.wait_for(asyncio.gather(*copies), 60)
    assert [r.digest for r in results] == [p.digest for p in pushed]


async def test_concurrent_copies_of_tags_sharing_layers_move_each_blob_once(
    registries: tuple[DistributionRegistry, DistributionRegistry],
) -> None:
    source, destination = registries
    shared = [bytes([i]) * (300 * KiB) for i in range(3)]
    async with aiohttp.ClientSession() as http:
        for tag in ("a", "b", "c", "d"):
            await oci.push_image(source.url, "shared/app", tag, layers=[*shared, tag.encode() * 1000], session=http)
    tuning = UploadTuning(monolithic_max=256 * KiB, chunk_size=128 * KiB)
    async with RegistryClient(source.url, tuning=tuning) as src, RegistryClient(destination.url, tuning=tuning) as dst:
        copies = [copy_image(src, "shared/app", t, dst, "shared/app", t, override=True) for t in ("a", "b", "c", "d")]
        results = await asyncio.wait_for(asyncio.gather(*copies), 60)
    moved = sum(r.bytes_transferred for r in results)
    shared_bytes = sum(len(layer) for layer in shared)
    assert shared_bytes < moved < 2 * shared_bytes  # each shared layer once, plus the small own layers and configs
