"""The copy engine against two real Distribution registries: A (anonymous) and B (htpasswd auth).

Small upload thresholds (monolithic ≤ 256 KiB, chunks of 128 KiB) make the chunked path run with
layers of a few hundred KiB. A ``FaultyProxy`` without faults serves as a request log where a test
needs to see the traffic.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import oci
from tests.support.faulty_proxy import FaultyProxy
from tests.support.services import DistributionRegistry
from workers.replication.copy import CopyProgress, copy_image
from workers.replication.errors import DigestMismatch, RetryPolicy
from workers.replication.manifests import OCI_INDEX, OCI_MANIFEST, Manifest
from workers.replication.registry import RegistryClient, fallback_tag
from workers.replication.uploads import UploadTuning

KiB = 1024
TUNING = UploadTuning(monolithic_max=256 * KiB, chunk_size=128 * KiB)
FAST_RETRY = RetryPolicy(attempts=4, initial_s=0.01, max_s=0.05)
AUTH = ("copier", "s3cret")


@pytest.fixture(scope="module")
def registry_a() -> Iterator[DistributionRegistry]:
    with DistributionRegistry() as registry:
        yield registry


@pytest.fixture(scope="module")
def registry_b() -> Iterator[DistributionRegistry]:
    with DistributionRegistry(auth=AUTH) as registry:
        yield registry


def client(url: str, auth: tuple[str, str] | None = None, **options: object) -> RegistryClient:
    username, password = auth or (None, None)
    return RegistryClient(url, username=username, password=password, tuning=TUNING, retry=FAST_RETRY, **options)  # type: ignore[arg-type]


@pytest.fixture
async def src(registry_a: DistributionRegistry) -> AsyncIterator[RegistryClient]:
    async with client(registry_a.url) as c:
        yield c


@pytest.fixture
async def dst(registry_b: DistributionRegistry) -> AsyncIterator[RegistryClient]:
    async with client(registry_b.url, AUTH) as c:
        yield c


def repo(prefix: str) -> str:
    return f"{prefix}/r{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("flavor", ["oci", "docker"])
async def test_image_arrives_byte_for_byte_with_the_same_digest(
    registry_a: DistributionRegistry, registry_b: DistributionRegistry, src: RegistryClient, dst: RegistryClient,
    flavor: oci.Flavor,
) -> None:  # fmt: skip
    name = repo("lib")
    # 700 KiB > 256 KiB takes the chunked path (6 chunks); the others go monolithic.
    image = await oci.push_image(
        registry_a.url, name, "v1", layers=[300 * KiB, 200 * KiB, 700 * KiB], media_type=flavor
    )
    reports: list[CopyProgress] = []

    result = await copy_image(
        src, name, "v1", dst, "mirror/app", f"{flavor}-v1", override=False, progress=reports.append
    )

    copied = await oci.get_manifest(registry_b.url, "mirror/app", f"{flavor}-v1", auth=AUTH)
    assert copied is not None
    assert copied == (image.manifest, image.media_type, image.digest)
    assert result.status == "success" and result.digest == image.digest
    sizes = [300 * KiB, 200 * KiB, 700 * KiB]
    assert result.blobs_copied == 4 and result.blobs_skipped == 0 and result.manifests_copied == 1
    config_size = json.loads(image.manifest)["config"]["size"]
    assert result.bytes_transferred == sum(sizes) + config_size
    assert reports[-1] == CopyProgress(result.bytes_transferred, result.bytes_transferred, 4, 4)
    assert all(a.bytes_done <= b.bytes_done for a, b in itertools.pairwise(reports))


async def test_multi_arch_index_copies_every_platform(
    registry_a: DistributionRegistry, registry_b: DistributionRegistry, src: RegistryClient, dst: RegistryClient
) -> None:
    name = repo("multi")
    platforms = (("linux", "amd64"), ("linux", "arm64"), ("linux", "s390x"))
    index = await oci.push_index(registry_a.url, name, "v1", platforms, layers=[50 * KiB, 300 * KiB])

    result = await copy_image(src, name, "v1", dst, name, "v1", override=False)

    assert result.manifests_copied == 4
    assert result.blobs_copied == 3 * 3  # per platform: two random layers and a config
    assert await oci.get_manifest(registry_b.url, name, "v1", auth=AUTH) == (index.manifest, OCI_INDEX, index.digest)
    for child in index.children:
        copied = await oci.get_manifest(registry_b.url, name, child.digest, auth=AUTH)
        assert copied == (child.manifest, child.media_type, child.digest)


async def test_existing_tag_is_kept_without_override_and_same_digest_moves_nothing(
    registry_a: DistributionRegistry, registry_b: DistributionRegistry, src: RegistryClient
) -> None:
    name = repo("keep")
    first = await oci.push_image(registry_a.url, name, "v1", layers=[20 * KiB])
    second = await oci.push_image(registry_a.url, name, "v2", layers=[30 * KiB])
    async with FaultyProxy(registry_b.url) as proxy, client(proxy.url, AUTH) as dst:
        await copy_image(src, name, "v1", dst, name, "prod", override=False)
        proxy.log.clear()

        existed = await copy_image(src, name, "v2", dst, name, "prod", override=False)
        assert existed.status == "existed" and existed.digest == second.digest
        assert await dst.head_manifest(name, "prod") == first.digest

        proxy.log.clear()
        same = await copy_image(src, name, "v1", dst, name, "prod", override=False)
        assert same.status == "success" and same.digest == first.digest
        assert (same.bytes_transferred, same.blobs_copied, same.blobs_skipped, same.manifests_copied) == (0, 0, 0, 0)
        assert [(e.method, e.path) for e in proxy.log] == [("HEAD", f"/v2/{name}/manifests/prod")]

        replaced = await copy_image(src, name, "v2", dst, name, "prod", override=True)
        assert replaced.status == "success" and await dst.head_manifest(name, "prod") == second.digest


async def test_warm_copy_moves_no_blob_bytes(
    registry_a: DistributionRegistry, registry_b: DistributionRegistry, src: RegistryClient
) -> None:
    name = repo("warm")
    await oci.push_image(registry_a.url, name, "v1", layers=[100 * KiB, 400 * KiB])
    async with FaultyProxy(registry_b.url) as proxy, client(proxy.url, AUTH) as dst:
        cold = await copy_image(src, name, "v1", dst, name, "v1", override=False)
        proxy.log.clear()
        warm = await copy_image(src, name, "v1", dst, name, "v1-again", override=False)

    assert cold.blobs_copied == 3
    assert (warm.bytes_transferred, warm.blobs_copied, warm.blobs_skipped) == (0, 0, 3)
    assert proxy.matching(path="/blobs/uploads/") == []
    assert sum(e.request_bytes for e in proxy.log) == len((await src.get_manifest(name, "v1")).raw)


async def test_twenty_tags_sharing_layers_transfer_each_blob_once(
    registry_a: DistributionRegistry, src: RegistryClient, dst: RegistryClient
) -> None:
    name = repo("shared")
    base, middle = os.urandom(300 * KiB), os.urandom(120 * KiB)
    unique_sizes = 0
    for number in range(20):
        image = await oci.push_image(
            registry_a.url, name, f"t{number}", layers=[base, middle, os.urandom(KiB + number)]
        )
        unique_sizes += KiB + number + json.loads(image.manifest)["config"]["size"]

    results = [await copy_image(src, name, f"t{n}", dst, name, f"t{n}", override=False) for n in range(20)]

    assert sum(r.bytes_transferred for r in results) == len(base) + len(middle) + unique_sizes
    assert sum(r.blobs_copied for r in results) == 2 + 2 * 20
    assert sorted(await dst.list_tags(name)) == sorted(f"t{n}" for n in range(20))


async def test_same_registry_copies_mount_instead_of_streaming(registry_a: DistributionRegistry) -> None:
    name = repo("origin")
    image = await oci.push_image(registry_a.url, name, "v1", layers=[64 * KiB, 500 * KiB])
    async with FaultyProxy(registry_a.url) as proxy, client(proxy.url) as src, client(proxy.url) as dst:
        result = await copy_image(src, name, "v1", dst, "team/copy", "v1", override=False)

        assert (result.blobs_mounted, result.blobs_copied, result.bytes_transferred) == (3, 0, 0)
        mounts = proxy.matching("POST", rf"/v2/team/copy/blobs/uploads/\?mount=sha256:[0-9a-f]+&from={name}$")
        assert len(mounts) == 3 and len(proxy.matching("POST")) == 3
        assert proxy.matching("GET", "/blobs/") == []
        assert (await dst.get_manifest("team/copy", "v1")).raw == image.manifest


def _corrupt(registry: DistributionRegistry, digest: str) -> None:
    """Flip a byte of a stored blob: Distribution serves it as is (it checks digests on upload only)."""
    hex_digest = digest.removeprefix("sha256:")
    data = Path(registry.storage_dir, "docker/registry/v2/blobs/sha256", hex_digest[:2], hex_digest, "data")
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))


@pytest.mark.parametrize("size", [100 * KiB, 600 * KiB], ids=["monolithic", "chunked"])
async def test_corrupt_source_blob_is_refused_and_never_committed(
    registry_a: DistributionRegistry, src: RegistryClient, dst: RegistryClient, size: int
) -> None:
    name = repo("corrupt")
    image = await oci.push_image(registry_a.url, name, "v1", layers=[size])
    _corrupt(registry_a, image.layer_digests[0])

    with pytest.raises(DigestMismatch):
        await copy_image(src, name, "v1", dst, name, "v1", override=False)

    assert not await dst.blob_exists(name, image.layer_digests[0])
    assert await dst.head_manifest(name, "v1") is None


async def test_referrers_follow_their_subject_through_the_tag_fallback(
    registry_a: DistributionRegistry, registry_b: DistributionRegistry, src: RegistryClient, dst: RegistryClient
) -> None:
    name = repo("signed")
    subject = await oci.push_image(registry_a.url, name, "v1", layers=[10 * KiB])
    signature = await _push_signature(registry_a.url, name, subject)

    result = await copy_image(src, name, "v1", dst, name, "v1", override=False, include_referrers=True)

    assert result.manifests_copied == 3  # subject, signature, fallback index
    assert (await dst.get_manifest(name, signature.digest)).raw == signature.raw
    referrers, via_api = await dst.get_referrers(name, subject.digest)
    assert not via_api  # Distribution 2.8 has no referrers API
    assert [d.digest for d in referrers] == [signature.digest]
    assert referrers[0].document["artifactType"] == "application/vnd.example.signature"


async def _push_signature(url: str, name: str, subject: oci.PushedImage) -> Manifest:
    empty = await oci.push_blob(url, name, b"{}")
    payload = await oci.push_blob(url, name, os.urandom(700))
    document = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.example.signature.v1", "digest": payload, "size": 700}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    }  # fmt: skip
    raw = json.dumps(document).encode()
    digest = await oci.push_manifest(url, name, oci.sha256_digest(raw), raw, OCI_MANIFEST)
    entry = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw), "artifactType": document["artifactType"]}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    await oci.push_manifest(url, name, fallback_tag(subject.digest), index, OCI_INDEX)
    return Manifest(OCI_MANIFEST, digest, raw)


async def test_catalog_follows_link_pagination(registry_a: DistributionRegistry) -> None:
    for number in range(3):
        await oci.push_image(registry_a.url, f"paged/r{number}", "v1", layers=[100])
    async with FaultyProxy(registry_a.url) as proxy, client(proxy.url) as c:
        names = await c.catalog(page_size=2)
        assert {"paged/r0", "paged/r1", "paged/r2"} <= set(names)
        assert len(names) == len(set(names))
        assert len(proxy.matching("GET", "/_catalog")) >= 2


async def test_manifest_and_blob_primitives(registry_a: DistributionRegistry, src: RegistryClient) -> None:
    name = repo("prims")
    image = await oci.push_image(registry_a.url, name, "v1", layers=[3000])
    manifest = await src.get_manifest(name, "v1")
    assert (manifest.digest, manifest.media_type, manifest.raw) == (image.digest, OCI_MANIFEST, image.manifest)
    assert await src.head_manifest(name, "missing") is None
    layer = image.layer_digests[0]
    whole = b"".join([piece async for piece in src.get_blob(name, layer)])
    tail = b"".join([piece async for piece in src.get_blob(name, layer, offset=1000)])
    assert oci.sha256_digest(whole) == layer and tail == whole[1000:]
    assert await src.put_manifest(name, "copy", manifest) == image.digest
    assert await src.delete_manifest(name, image.digest) is True
    assert await src.delete_manifest(name, image.digest) is False
    assert await src.head_manifest(name, "copy") is None
