"""kube.py against the Kubernetes API test server, and the test server's own PATCH semantics."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes_asyncio.client import ApiClient

from tests.support.kube_api import KubeApiServer
from workers.config import ClusterSettings
from workers.triggers.kube import ClusterClients, KubeError, WorkloadRef, update_workload_image

TOKEN = "s3cret-token"
NEW = "registry.example/team/app:2@sha256:" + "a" * 64
STRATEGIC = "application/strategic-merge-patch+json"


@pytest.fixture
async def server() -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer(token=TOKEN, forbidden_namespaces={"locked"}, progress_deadline_s=0.2) as api_server:
        yield api_server


@pytest.fixture
async def clients(server: KubeApiServer) -> AsyncIterator[ClusterClients]:
    cluster_clients = ClusterClients({"c-1": ClusterSettings(name="prod", server=server.url, token=TOKEN)})
    yield cluster_clients
    await cluster_clients.close()


@pytest.fixture
async def api(clients: ClusterClients) -> ApiClient:
    return await clients.client("c-1")


def ref(
    kind: str = "deployments", name: str = "app", container: str | None = "web", namespace: str = "default"
) -> WorkloadRef:
    return WorkloadRef(cluster="c-1", namespace=namespace, kind=kind, name=name, container=container)


async def test_updates_the_named_container_only(server: KubeApiServer, api: ApiClient) -> None:
    server.add_workload("deployments", "default", "app", containers={"web": "nginx:1", "proxy": "envoy:1"})

    outcome = await update_workload_image(api, ref(), NEW, verify=False, timeout_s=5)

    assert outcome.succeeded and outcome.status_code == 200 and outcome.rolled_back_to is None
    assert outcome.previous_images == {"web": "nginx:1"}
    assert outcome.detail == f"deployments/app in ns default: container web nginx:1 -> {NEW}; rollout not verified"
    assert server.image_of("deployments", "default", "app", "web") == NEW
    assert server.image_of("deployments", "default", "app", "proxy") == "envoy:1"
    [patch] = server.patches()
    assert patch.content_type == STRATEGIC
    assert patch.body["spec"] == {"template": {"spec": {"containers": [{"name": "web", "image": NEW}]}}}
    assert patch.body["metadata"]["resourceVersion"]


@pytest.mark.parametrize("container", [None, ""])
async def test_updates_every_container_when_none_is_named(
    server: KubeApiServer, api: ApiClient, container: str | None
) -> None:
    server.add_workload("deployments", "default", "app", containers={"web": "nginx:1", "proxy": "envoy:1"})

    outcome = await update_workload_image(api, ref(container=container), NEW, verify=False, timeout_s=5)

    assert outcome.previous_images == {"web": "nginx:1", "proxy": "envoy:1"}
    assert {server.image_of("deployments", "default", "app", c) for c in ("web", "proxy")} == {NEW}


@pytest.mark.parametrize("kind", ["statefulsets", "daemonsets"])
async def test_updates_and_verifies_other_kinds(server: KubeApiServer, api: ApiClient, kind: str) -> None:
    server.add_workload(kind, "default", "app", replicas=3)

    outcome = await update_workload_image(api, ref(kind), NEW, verify=True, timeout_s=5, poll_interval_s=0.02)

    assert outcome.succeeded, outcome.detail
    assert outcome.detail.startswith(f"{kind}/app in ns default: container web nginx:1 -> {NEW}; rollout complete")
    assert server.image_of(kind, "default", "app", "web") == NEW


async def test_cronjob_update_has_nothing_to_verify(server: KubeApiServer, api: ApiClient) -> None:
    server.add_workload("cronjobs", "jobs", "nightly", containers={"task": "busybox:1"})

    outcome = await update_workload_image(
        api, ref("cronjobs", "nightly", "task", "jobs"), NEW, verify=True, timeout_s=5, poll_interval_s=0.02
    )

    assert outcome.succeeded and "nothing to verify" in outcome.detail
    assert server.image_of("cronjobs", "jobs", "nightly", "task") == NEW
    [patch] = server.patches()
    assert patch.path == "/apis/batch/v1/namespaces/jobs/cronjobs/nightly"
    containers = patch.body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert containers == [{"name": "task", "image": NEW}]


async def test_unchanged_image_is_not_patched(server: KubeApiServer, api: ApiClient) -> None:
    server.add_workload("deployments", "default", "app", containers={"web": NEW})

    outcome = await update_workload_image(api, ref(), NEW, verify=True, timeout_s=5)

    assert outcome.succeeded and "unchanged" in outcome.detail
    assert outcome.previous_images == {"web": NEW}
    assert server.patches() == []


async def test_conflicts_are_retried(server: KubeApiServer, api: ApiClient) -> None:
    server.add_workload("deployments", "default", "app")
    server.conflict_next(3)

    outcome = await update_workload_image(api, ref(), NEW, verify=False, timeout_s=5)

    assert outcome.succeeded
    assert len(server.patches()) == 4
    assert [r.method for r in server.requests] == ["GET", "PATCH"] * 4


async def test_persistent_conflict_is_transient(server: KubeApiServer, api: ApiClient) -> None:
    server.add_workload("deployments", "default", "app")
    server.conflict_next(10)

    with pytest.raises(KubeError) as caught:
        await update_workload_image(api, ref(), NEW, verify=False, timeout_s=5)

    assert caught.value.transient and caught.value.status == 409
    assert len(server.patches()) == 4
    assert server.image_of("deployments", "default", "app", "web") == "nginx:1"


@pytest.mark.parametrize(("namespace", "status"), [("default", 404), ("locked", 403)])
async def test_missing_or_forbidden_workload_is_permanent(
    server: KubeApiServer, api: ApiClient, namespace: str, status: int
) -> None:
    server.add_workload("deployments", "locked", "app")

    with pytest.raises(KubeError) as caught:
        await update_workload_image(api, ref(namespace=namespace), NEW, verify=False, timeout_s=5)

    assert not caught.value.transient and caught.value.status == status
    assert '"app"' in str(caught.value)  # the Status message, e.g. deployments.apps "app" not found


async def test_wrong_token_is_permanent(server: KubeApiServer) -> None:
    server.add_workload("deployments", "default", "app")
    clients = ClusterClients({"c-1": ClusterSettings(server=server.url, token="wrong")})
    try:
        with pytest.raises(KubeError) as caught:
            await update_workload_image(await clients.client("c-1"), ref(), NEW, verify=False, timeout_s=5)
    finally:
        await clients.close()

    assert not caught.value.transient and caught.value.status == 401
    assert "wrong" not in str(caught.value)


async def test_missing_container_is_permanent(server: KubeApiServer, api: ApiClient) -> None:
    server.add_workload("deployments", "default", "app", containers={"a": "x:1", "b": "y:1"})

    with pytest.raises(KubeError, match="container web not found in deployments/app; containers: a, b") as caught:
        await update_workload_image(api, ref(), NEW, verify=False, timeout_s=5)

    assert not caught.value.transient
    assert server.patches() == []


async def test_unreachable_server_is_transient(server: KubeApiServer) -> None:
    clients = ClusterClients({"c-1": ClusterSettings(server="http://127.0.0.1:9", token=TOKEN)})
    try:
        with pytest.raises(KubeError) as caught:
            await update_workload_image(await clients.client("c-1"), ref(), NEW, verify=False, timeout_s=5)
    finally:
        await clients.close()

    assert caught.value.transient and caught.value.status is None


async def test_verified_rollout_succeeds(server: KubeApiServer, api: ApiClient) -> None:
    server.add_workload("deployments", "default", "app", replicas=2)

    outcome = await update_workload_image(api, ref(), NEW, verify=True, timeout_s=5, poll_interval_s=0.02)

    assert outcome.succeeded
    assert outcome.detail.endswith("rollout complete (updated 2/2, available 2/2, unavailable 0)")


async def test_failed_rollout_is_rolled_back(server: KubeApiServer, api: ApiClient) -> None:
    server.progress_deadline_s = 600
    server.add_workload("deployments", "default", "app", containers={"web": "nginx:1", "proxy": "envoy:1"})
    server.failing_images.add(NEW)

    outcome = await update_workload_image(
        api, ref(container=None), NEW, verify=True, timeout_s=0.3, poll_interval_s=0.02
    )

    assert not outcome.succeeded and outcome.rolled_back_to == "nginx:1"
    assert "timeout after 0.3s (updated 0/2, available 0/2, unavailable 2)" in outcome.detail
    assert outcome.detail.endswith("rolled back to nginx:1")
    assert server.image_of("deployments", "default", "app", "web") == "nginx:1"
    assert server.image_of("deployments", "default", "app", "proxy") == "envoy:1"
    assert [p.body["spec"]["template"]["spec"]["containers"] for p in server.patches()][-1] == [
        {"name": "web", "image": "nginx:1"},
        {"name": "proxy", "image": "envoy:1"},
    ]


async def test_progress_deadline_exceeded_fails_fast(server: KubeApiServer, api: ApiClient) -> None:
    server.add_workload("deployments", "default", "app")
    server.failing_images.add(NEW)
    started = time.monotonic()

    outcome = await update_workload_image(api, ref(), NEW, verify=True, timeout_s=30, poll_interval_s=0.02)

    assert time.monotonic() - started < 5
    assert not outcome.succeeded and outcome.rolled_back_to == "nginx:1"
    assert "rollout failed: ProgressDeadlineExceeded" in outcome.detail
    assert server.image_of("deployments", "default", "app", "web") == "nginx:1"


async def test_unknown_cluster(clients: ClusterClients) -> None:
    assert clients.resolve("c-1", "other") == "c-1"
    assert clients.resolve("unknown", "prod") == "c-1"
    assert clients.resolve(None, "nope") is None
    assert await clients.client("prod") is await clients.client("c-1")
    with pytest.raises(KubeError, match="unknown cluster") as caught:
        await clients.client("nope")
    assert not caught.value.transient


async def test_token_file(server: KubeApiServer, tmp_path: Path) -> None:
    server.add_workload("deployments", "default", "app")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    clients = ClusterClients({"c-1": ClusterSettings(server=server.url, token_file=token_file)})
    try:
        outcome = await update_workload_image(await clients.client("c-1"), ref(), NEW, verify=False, timeout_s=5)
    finally:
        await clients.close()
    assert outcome.succeeded


async def test_unreadable_token_file(tmp_path: Path) -> None:
    clients = ClusterClients({"c-1": ClusterSettings(server="http://127.0.0.1:9", token_file=tmp_path / "missing")})
    with pytest.raises(KubeError, match="cannot load credentials") as caught:
        await clients.client("c-1")
    assert not caught.value.transient


async def test_kubeconfig(server: KubeApiServer, tmp_path: Path) -> None:
    server.add_workload("deployments", "default", "app")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server.url}}],
                "users": [{"name": "deployer", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": "other", "context": {"cluster": "test", "user": "nobody"}},
                    {"name": "deploy", "context": {"cluster": "test", "user": "deployer"}},
                ],
                "current-context": "other",
            }
        )
    )
    clients = ClusterClients({"c-1": ClusterSettings(kubeconfig=kubeconfig, context="deploy")})
    try:
        outcome = await update_workload_image(await clients.client("c-1"), ref(), NEW, verify=False, timeout_s=5)
    finally:
        await clients.close()
    assert outcome.succeeded


async def test_ca_data_is_written_and_removed(server: KubeApiServer) -> None:
    clients = ClusterClients({"c-1": ClusterSettings(server=server.url, token=TOKEN, ca_data=_self_signed_pem())})
    api_client = await clients.client("c-1")
    ca_file = api_client.configuration.ssl_ca_cert
    assert ca_file is not None and _exists(ca_file)
    await clients.close()
    assert not _exists(ca_file)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _self_signed_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


# -- the test server itself --------------------------------------------------------------------


async def _patch(server: KubeApiServer, content_type: str, body: Any) -> tuple[int, Any]:
    url = f"{server.url}/apis/apps/v1/namespaces/default/deployments/app"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    async with aiohttp.ClientSession() as session, session.patch(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_server_merge_patch_replaces_lists(server: KubeApiServer) -> None:
    server.add_workload("deployments", "default", "app", containers={"web": "nginx:1", "proxy": "envoy:1"})
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}}

    status, obj = await _patch(server, "application/merge-patch+json", json.dumps(patch))

    assert status == 200
    assert obj["spec"]["template"]["spec"]["containers"] == [{"name": "web", "image": "nginx:2"}]
    assert obj["metadata"]["generation"] == 2


async def test_server_strategic_merge_patch_merges_by_name(server: KubeApiServer) -> None:
    before = server.add_workload("deployments", "default", "app", containers={"web": "nginx:1", "proxy": "envoy:1"})
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "envoy:2"}]}}}}

    status, obj = await _patch(server, STRATEGIC, json.dumps(patch))

    assert status == 200
    images = {c["name"]: c["image"] for c in obj["spec"]["template"]["spec"]["containers"]}
    assert images == {"web": "nginx:1", "proxy": "envoy:2"}
    assert int(obj["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])


async def test_server_json_patch(server: KubeApiServer) -> None:
    server.add_workload("deployments", "default", "app")
    path = "/spec/template/spec/containers/0/image"
    ops = [
        {"op": "test", "path": path, "value": "nginx:1"},
        {"op": "replace", "path": path, "value": "nginx:2"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env", "value": [{"name": "A", "value": "1"}]},
        {"op": "remove", "path": "/spec/progressDeadlineSeconds"},
    ]

    status, obj = await _patch(server, "application/json-patch+json", json.dumps(ops))

    assert status == 200
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:2" and container["env"] == [{"name": "A", "value": "1"}]
    assert "progressDeadlineSeconds" not in obj["spec"]

    status, error = await _patch(
        server, "application/json-patch+json", json.dumps([{"op": "test", "path": path, "value": "x"}])
    )
    assert status == 422 and error["kind"] == "Status" and error["reason"] == "Invalid"


async def test_server_errors_are_status_objects(server: KubeApiServer) -> None:
    server.add_workload("deployments", "default", "app")
    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 5}}

    status, error = await _patch(server, STRATEGIC, json.dumps(stale))
    assert status == 409
    assert {k: error[k] for k in ("kind", "apiVersion", "status", "reason", "code")} == {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Conflict",
        "code": 409,
    }
    assert "the object has been modified" in error["message"]

    status, error = await _patch(server, "application/json", json.dumps({"spec": {}}))
    assert status == 415 and error["reason"] == "UnsupportedMediaType"

    async with aiohttp.ClientSession() as session:
        url = f"{server.url}/apis/apps/v1/namespaces/default/deployments/ghost"
        async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 404
            assert (await response.json())["reason"] == "NotFound"
        async with session.get(url) as response:
            assert response.status == 401
            assert (await response.json())["reason"] == "Unauthorized"
