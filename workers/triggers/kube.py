"""Deployment triggers' I/O shell: set a workload's container image through the Kubernetes API.

Called by the trigger worker once a pushed tag matched a deployment trigger (Huawei SWR style):

    GET workload ──► choose containers ──► strategic-merge PATCH (resourceVersion precondition;
    409 → re-GET, up to 3 retries) ──► optionally poll status until the rollout completes,
    else PATCH the previous images back

Every API failure surfaces as :class:`KubeError`, whose ``transient`` flag tells the caller
whether retrying later can help. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml

from workers.config import ClusterSettings

# kubernetes_asyncio costs ~40 MB of memory to import: only processes that talk to a cluster pay it.
if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient, Configuration
    from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "WORKLOAD_KINDS",
    "ClusterClients",
    "KubeError",
    "RolloutOutcome",
    "WorkloadRef",
    "update_workload_image",
]

log = logging.getLogger(__name__)

WORKLOAD_KINDS = ("deployments", "statefulsets", "daemonsets", "cronjobs")
# kind → (API group, suffix of the generated read_namespaced_* / patch_namespaced_* methods)
_OPERATIONS = {
    "deployments": ("apps", "deployment"),
    "statefulsets": ("apps", "stateful_set"),
    "daemonsets": ("apps", "daemon_set"),
    "cronjobs": ("batch", "cron_job"),
}
CONFLICT_RETRIES = 3
REQUEST_TIMEOUT_S = 30.0
# Projected service-account tokens rotate (about hourly), so a token_file is re-read this often.
TOKEN_REFRESH_S = 60.0
_STRATEGIC_MERGE = "application/strategic-merge-patch+json"

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WorkloadRef:
    cluster: str  # key in settings.clusters (cluster_id) or a cluster's `name`
    namespace: str
    kind: str  # one of WORKLOAD_KINDS
    name: str
    container: str | None  # None or "" = every container


@dataclass(frozen=True, slots=True)
class RolloutOutcome:
    succeeded: bool
    detail: str
    previous_images: dict[str, str]  # chosen container name → its image before the update
    image: str
    rolled_back_to: str | None  # previous image of the first changed container, after a failed rollout
    status_code: int | None


class KubeError(Exception):
    """A failure talking to the API server.

    ``transient`` is True for connection errors, timeouts, 408, 429 and 5xx (retry later), and
    for conflicts that outlasted the retries; False for 401/403/404/422 and other 4xx, unknown
    clusters, unreadable credentials and missing containers (retrying will not help).
    ``status`` is the HTTP status, or None when no response arrived.
    """

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


async def update_workload_image(
    client: ApiClient,
    ref: WorkloadRef,
    image: str,
    *,
    verify: bool,
    timeout_s: float,
    poll_interval_s: float = 1.0,
) -> RolloutOutcome:
    """Sets ``image`` on the chosen container(s) of ``ref``; with ``verify``, waits for the rollout.

    Called by the trigger worker for each matched deployment trigger. Non-blocking, but with
    ``verify`` it awaits up to ``timeout_s`` (plus the rollback). A failed or timed-out rollout is
    not raised: the previous images are restored and ``succeeded`` is False. Raises
    :class:`KubeError` when the API refuses or cannot be reached, or the container is missing.
    """
    if ref.kind not in WORKLOAD_KINDS:
        raise KubeError(
            f"unknown workload kind {ref.kind!r}; expected one of {', '.join(WORKLOAD_KINDS)}", transient=False
        )
    before = await _set_images(client, ref, lambda current: dict.fromkeys(_choose(ref, current), image))
    changed = {name: old for name, old in before.items() if old != image}
    if not changed:
        detail = f"{_label(ref)}: container {', '.join(before)} already at {image}; unchanged"
        return RolloutOutcome(True, detail, before, image, None, 200)
    summary = f"{_label(ref)}: " + ", ".join(f"container {name} {old} -> {image}" for name, old in changed.items())
    log.info("updated %s", summary)
    if not verify or ref.kind == "cronjobs":
        note = "rollout not verified" if not verify else "nothing to verify for a CronJob (its next Job uses the image)"
        return RolloutOutcome(True, f"{summary}; {note}", before, image, None, 200)
    complete, progress = await _await_rollout(client, ref, timeout_s, poll_interval_s)
    if complete:
        return RolloutOutcome(True, f"{summary}; rollout complete ({progress})", before, image, None, 200)
    # Restore only containers still running our image: a newer change by someone else wins.
    await _set_images(client, ref, lambda current: {n: old for n, old in changed.items() if current.get(n) == image})
    rolled_back_to = next(iter(changed.values()))
    log.warning("%s; rollout failed: %s; rolled back to %s", summary, progress, rolled_back_to)
    detail = f"{summary}; rollout failed: {progress}; rolled back to {rolled_back_to}"
    return RolloutOutcome(False, detail, before, image, rolled_back_to, 200)


async def _set_images(
    client: ApiClient, ref: WorkloadRef, wanted: Callable[[dict[str, str]], dict[str, str]]
) -> dict[str, str]:
    """PATCHes the images ``wanted(current images)`` names, re-reading on 409 Conflict.

    Returns the previous images of the containers ``wanted`` named (changed or not).
    """
    for _ in range(CONFLICT_RETRIES + 1):
        obj = await _call(client, ref)
        current = _container_images(ref.kind, obj)
        targets = wanted(current)
        changes = {name: target for name, target in targets.items() if current[name] != target}
        if changes:
            try:
                await _call(client, ref, _image_patch(ref.kind, changes, obj["metadata"]["resourceVersion"]))
            except KubeError as exc:
                if exc.status == 409:
                    continue
                raise
        return {name: current[name] for name in targets}
    raise KubeError(
        f"PATCH {_label(ref)}: still conflicting after {CONFLICT_RETRIES} retries", transient=True, status=409
    )


async def _await_rollout(
    client: ApiClient, ref: WorkloadRef, timeout_s: float, poll_interval_s: float
) -> tuple[bool, str]:
    """Polls the workload until its rollout completes, fails or ``timeout_s`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            state, progress = rollout_state(ref.kind, await _call(client, ref))
        except KubeError as exc:
            if not exc.transient:
                raise
            state, progress = None, f"status unreadable: {exc}"
        if state is not None:
            return state, progress
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False, f"timeout after {timeout_s:g}s ({progress})"
        await asyncio.sleep(min(poll_interval_s, remaining))


def rollout_state(kind: str, obj: Json) -> tuple[bool | None, str]:
    """Reads a workload's status: (True complete | False failed | None still rolling, the counts)."""
    metadata, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if kind == "deployments":
        complete, counts, failure = _deployment_progress(spec, status)
    elif kind == "statefulsets":
        complete, counts, failure = _statefulset_progress(spec, status)
    elif kind == "daemonsets":
        complete, counts, failure = _daemonset_progress(status)
    else:
        return True, "nothing to verify"
    generation, observed = metadata.get("generation") or 0, status.get("observedGeneration") or 0
    if observed < generation:
        return None, f"generation {generation} not yet observed; {counts}"
    if failure:
        return False, f"{failure}; {counts}"
    return (True if complete else None), counts


def _deployment_progress(spec: Json, status: Json) -> tuple[bool, str, str | None]:
    want = spec.get("replicas", 1)
    updated, available = status.get("updatedReplicas") or 0, status.get("availableReplicas") or 0
    unavailable = status.get("unavailableReplicas") or 0
    counts = f"updated {updated}/{want}, available {available}/{want}, unavailable {unavailable}"
    failure = next(
        (
            f"ProgressDeadlineExceeded: {c.get('message', '')}".rstrip(": ")
            for c in status.get("conditions") or []
            if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
        ),
        None,
    )
    return updated == available == want and not unavailable, counts, failure


def _statefulset_progress(spec: Json, status: Json) -> tuple[bool, str, None]:
    want = spec.get("replicas", 1)
    updated, ready = status.get("updatedReplicas") or 0, status.get("readyReplicas") or 0
    current, update = status.get("currentRevision"), status.get("updateRevision")
    counts = f"updated {updated}/{want}, ready {ready}/{want}"
    same_revision = current is None or update is None or current == update
    if not same_revision:
        counts += f", revision {current} -> {update}"
    return updated == ready == want and same_revision, counts, None


def _daemonset_progress(status: Json) -> tuple[bool, str, None]:
    desired = status.get("desiredNumberScheduled") or 0
    updated, available = status.get("updatedNumberScheduled") or 0, status.get("numberAvailable") or 0
    return updated == available == desired, f"updated {updated}/{desired}, available {available}/{desired}", None


def _label(ref: WorkloadRef) -> str:
    return f"{ref.kind}/{ref.name} in ns {ref.namespace}"


def _container_images(kind: str, obj: Json) -> dict[str, str]:
    spec = obj.get("spec") or {}
    if kind == "cronjobs":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    return {c["name"]: c.get("image", "") for c in pod_spec.get("containers") or []}


def _choose(ref: WorkloadRef, images: dict[str, str]) -> dict[str, str]:
    if not ref.container:
        return images
    if ref.container not in images:
        names = ", ".join(images) or "none"
        message = f"container {ref.container} not found in {ref.kind}/{ref.name}; containers: {names}"
        raise KubeError(message, transient=False)
    return {ref.container: images[ref.container]}


def _image_patch(kind: str, images: Mapping[str, str], resource_version: str) -> Json:
    """A strategic merge patch: containers merge by name, so only these images change."""
    template = {"spec": {"containers": [{"name": name, "image": image} for name, image in images.items()]}}
    spec = {"jobTemplate": {"spec": {"template": template}}} if kind == "cronjobs" else {"template": template}
    return {"metadata": {"resourceVersion": resource_version}, "spec": spec}


async def _call(client: ApiClient, ref: WorkloadRef, patch: Json | None = None) -> Json:
    """GETs the workload, or PATCHes it; returns the object as the API's JSON (camelCase keys)."""
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio.client.exceptions import ApiException

    group, suffix = _OPERATIONS[ref.kind]
    api = k8s.AppsV1Api(client) if group == "apps" else k8s.BatchV1Api(client)
    verb = "GET" if patch is None else "PATCH"
    try:
        if patch is None:
            read = getattr(api, f"read_namespaced_{suffix}")
            obj = await read(ref.name, ref.namespace, _request_timeout=REQUEST_TIMEOUT_S)
        else:
            update = getattr(api, f"patch_namespaced_{suffix}")
            obj = await update(
                ref.name, ref.namespace, patch, _content_type=_STRATEGIC_MERGE, _request_timeout=REQUEST_TIMEOUT_S
            )
    except ApiException as exc:
        raise _api_error(exc, verb, ref) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise KubeError(f"{verb} {_label(ref)}: {type(exc).__name__}: {exc}", transient=True) from exc
    except ValueError as exc:  # the client's model validation rejected the answer
        raise KubeError(f"{verb} {_label(ref)}: unexpected answer: {exc}", transient=False) from exc
    return dict(client.sanitize_for_serialization(obj))


def _api_error(exc: ApiException, verb: str, ref: WorkloadRef) -> KubeError:
    status = exc.status if isinstance(exc.status, int) and exc.status else None
    message = _status_message(exc.body) or exc.reason
    transient = status is not None and (status in (408, 429) or status >= 500)
    return KubeError(f"{verb} {_label(ref)}: {status} {message}", transient=transient, status=status)


def _status_message(body: object) -> str | None:
    """The ``message`` of the ``Status`` object the API server answers errors with."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        status = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        return None
    message = status.get("message") if isinstance(status, dict) else None
    return message if isinstance(message, str) else None


class ClusterClients:
    """One kubernetes_asyncio ApiClient per configured cluster, created lazily, closed by close().

    Owned by the trigger worker for its lifetime. Credentials come from ``ClusterSettings``:
    ``server`` with ``token``/``token_file`` and ``ca_file``/``ca_data``, or a ``kubeconfig``
    (optionally a ``context``), in which case ``server``, ``token`` and ``insecure`` override it.
    """

    def __init__(self, clusters: Mapping[str, ClusterSettings]) -> None:
        self._clusters = dict(clusters)
        self._clients: dict[str, ApiClient] = {}
        self._ca_files: list[str] = []
        self._lock = asyncio.Lock()

    def resolve(self, cluster_id: str | None, cluster_name: str | None) -> str | None:
        """The settings key: ``cluster_id`` if configured, else the cluster named ``cluster_name``."""
        if cluster_id and cluster_id in self._clusters:
            return cluster_id
        if cluster_name:
            return next((key for key, cluster in self._clusters.items() if cluster.name == cluster_name), None)
        return None

    async def client(self, cluster: str) -> ApiClient:
        """The client of ``cluster`` (a settings key or a cluster's name), created on first use.

        Reads credential files off the event loop. Raises :class:`KubeError` (not transient)
        for an unknown cluster or unreadable credentials.
        """
        key = self.resolve(cluster, cluster)
        if key is None:
            raise KubeError(f"unknown cluster {cluster!r}", transient=False)
        async with self._lock:
            if key not in self._clients:
                self._clients[key] = await self._connect(key, self._clusters[key])
            return self._clients[key]

    async def close(self) -> None:
        """Closes every client and removes the CA files written for ``ca_data``. Never raises."""
        clients, self._clients = list(self._clients.values()), {}
        for api_client in clients:
            with contextlib.suppress(Exception):
                await api_client.close()
        for path in self._ca_files:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._ca_files.clear()

    async def _connect(self, key: str, settings: ClusterSettings) -> ApiClient:
        from kubernetes_asyncio.client import ApiClient
        from kubernetes_asyncio.config.config_exception import ConfigException

        try:
            return ApiClient(configuration=await self._configuration(settings))
        except (OSError, ValueError, ConfigException, yaml.YAMLError) as exc:
            # Messages name files and keys, never the token itself.
            raise KubeError(
                f"cluster {key}: cannot load credentials: {type(exc).__name__}: {exc}", transient=False
            ) from exc

    async def _configuration(self, settings: ClusterSettings) -> Configuration:
        from kubernetes_asyncio.client import Configuration
        from kubernetes_asyncio.config import load_kube_config

        configuration = Configuration()
        if settings.kubeconfig is not None:
            await load_kube_config(
                config_file=str(settings.kubeconfig),
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
        if settings.server:
            configuration.host = settings.server
        token = settings.token
        if token is None and settings.token_file is not None:
            token = await _read_token(settings.token_file)
            configuration.refresh_api_key_hook = _TokenFile(settings.token_file)
        if token:
            configuration.api_key = {"BearerToken": token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        if settings.ca_file is not None:
            configuration.ssl_ca_cert = str(settings.ca_file)
        elif settings.ca_data:
            configuration.ssl_ca_cert = await self._write_ca(settings.ca_data)
        if settings.insecure:
            configuration.verify_ssl = False
        return configuration

    async def _write_ca(self, ca_data: str) -> str:
        """Writes the CA to a file (the client takes only paths); close() removes it."""
        pem = ca_data if "-----BEGIN" in ca_data else _decode_base64_pem(ca_data)
        fd, path = tempfile.mkstemp(prefix="registry-workers-ca-", suffix=".pem")
        self._ca_files.append(path)
        with os.fdopen(fd, "w") as file:
            await asyncio.to_thread(file.write, pem)
        return path


def _decode_base64_pem(data: str) -> str:
    """Accepts a kubeconfig's base64 ``certificate-authority-data`` as well as PEM text."""
    try:
        return base64.b64decode(data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("ca_data is neither PEM text nor base64-encoded PEM") from None


async def _read_token(path: Path) -> str:
    token = (await asyncio.to_thread(path.read_text)).strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


class _TokenFile:
    """``refresh_api_key_hook``: re-reads a rotating token file at most every TOKEN_REFRESH_S."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._read_at = time.monotonic()

    async def __call__(self, configuration: Configuration) -> None:
        if time.monotonic() - self._read_at < TOKEN_REFRESH_S:
            return
        self._read_at = time.monotonic()
        try:
            configuration.api_key["BearerToken"] = await _read_token(self._path)
        except (OSError, ValueError) as exc:
            log.warning("cannot re-read token file %s (%s); keeping the previous token", self._path, exc)
