"""A Kubernetes API server stand-in for tests: apps/v1 and batch/v1 workloads over plain HTTP.

No real API server can run here, so this one follows the real one wherever a client could tell
the difference: object shape (``metadata.uid/resourceVersion/generation``, ``spec``, ``status``),
the three PATCH content types, the ``metadata.resourceVersion`` precondition answered with 409,
errors as ``Status`` objects, bearer tokens (401) and denied namespaces (403). Fields the server
owns (name, uid, generation, status, ...) cannot be patched; a no-op patch changes nothing.

A simulated controller converges ``status`` ``rollout_delay_s`` after each spec change, except
when a pod-template image is in ``failing_images``: then nothing becomes updated or available,
and a Deployment's ``Progressing`` condition turns ``ProgressDeadlineExceeded`` after
``progress_deadline_s``.

    async with KubeApiServer(token="t") as server:
        server.add_workload("deployments", "default", "app", containers={"web": "nginx:1"})
        ... talk to server.url ...
        assert server.image_of("deployments", "default", "app", "web") == "nginx:2"
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiohttp import web

__all__ = ["KubeApiServer", "RecordedRequest", "json_patch", "merge_patch", "strategic_merge_patch"]

GROUPS = {"deployments": "apps", "statefulsets": "apps", "daemonsets": "apps", "cronjobs": "batch"}
KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet", "cronjobs": "CronJob"}
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
# The list fields of a pod spec that strategic merge patches merge by key (``patchMergeKey`` in
# the OpenAPI schema); every other list is replaced whole, as the real server does.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
}
Key = tuple[str, str, str]  # (kind, namespace, name)
Json = dict[str, Any]


class RecordedRequest(NamedTuple):
    method: str
    path: str
    content_type: str | None
    body: Any  # decoded JSON, the raw text if it was not JSON, None when empty


class ApiStatusError(Exception):
    """Answered as a ``Status`` object with ``code`` as the HTTP status."""

    def __init__(self, code: int, reason: str, message: str, details: Json | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status: Json = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details is not None:
            self.status["details"] = details


@dataclass
class _Stored:
    obj: Json
    desired: int  # replicas, or for a DaemonSet the number of nodes it runs on
    controller: asyncio.Task[None] | None = field(default=None)


class KubeApiServer:
    """Serves seeded workloads on ``127.0.0.1`` (random port) while the context is open."""

    def __init__(
        self,
        *,
        token: str | None = None,
        forbidden_namespaces: Iterable[str] = (),
        rollout_delay_s: float = 0.05,
        progress_deadline_s: float = 600.0,
    ) -> None:
        self.token = token
        self.forbidden_namespaces = set(forbidden_namespaces)
        self.rollout_delay_s = rollout_delay_s
        self.progress_deadline_s = progress_deadline_s
        self.failing_images: set[str] = set()
        self.requests: list[RecordedRequest] = []
        self._objects: dict[Key, _Stored] = {}
        self._versions = itertools.count(1000)
        self._conflicts = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> KubeApiServer:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        tasks = [s.controller for s in self._objects.values() if s.controller is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests call -------------------------------------------------------------------

    def add_workload(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        containers: Mapping[str, str] | None = None,
        replicas: int = 2,
    ) -> Json:
        """Seeds a workload whose rollout is already complete; returns a copy of it."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        obj = _new_workload(kind, namespace, name, containers or {"web": "nginx:1"}, replicas)
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        stored = _Stored(obj, replicas)
        obj["status"] = _converged_status(kind, obj, stored.desired, healthy=True, previous={})
        self._objects[(kind, namespace, name)] = stored
        return copy.deepcopy(obj)

    def workload(self, kind: str, namespace: str, name: str) -> Json:
        return copy.deepcopy(self._objects[(kind, namespace, name)].obj)

    def image_of(self, kind: str, namespace: str, name: str, container: str) -> str:
        containers = _pod_template(kind, self._objects[(kind, namespace, name)].obj)["spec"]["containers"]
        return next(str(c["image"]) for c in containers if c["name"] == container)

    def conflict_next(self, n: int) -> None:
        """The next ``n`` PATCHes answer 409 Conflict, whatever their resourceVersion."""
        self._conflicts = n

    def patches(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "PATCH"]

    # -- HTTP ------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_translate])
        apps = "/apis/apps/v1/namespaces/{namespace}/{kind:deployments|statefulsets|daemonsets}/{name}"
        batch = "/apis/batch/v1/namespaces/{namespace}/{kind:cronjobs}/{name}"
        for path in (apps, batch):
            app.router.add_get(path, self._get_workload)
            app.router.add_patch(path, self._patch_workload)
        app.router.add_get("/version", self._version)
        app.router.add_get("/api", self._core_versions)
        app.router.add_get("/apis", self._group_list)
        return app

    @web.middleware
    async def _record_and_translate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = await request.text()  # cached by aiohttp; handlers read it again
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        content_type = request.content_type if request.body_exists else None
        self.requests.append(RecordedRequest(request.method, request.path, content_type, body))
        try:
            if request.path != "/version":
                self._authenticate(request)
            return await handler(request)
        except ApiStatusError as exc:
            return web.json_response(exc.status, status=exc.code)
        except web.HTTPNotFound:
            message = "the server could not find the requested resource"
            return web.json_response(ApiStatusError(404, "NotFound", message, {}).status, status=404)
        except web.HTTPMethodNotAllowed:
            error = ApiStatusError(405, "MethodNotAllowed", "the server does not allow this method on the resource")
            return web.json_response(error.status, status=405)

    def _authenticate(self, request: web.Request) -> None:
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            raise ApiStatusError(401, "Unauthorized", "Unauthorized")

    def _authorize(self, request: web.Request, verb: str) -> Key:
        kind, namespace, name = (request.match_info[k] for k in ("kind", "namespace", "name"))
        if namespace in self.forbidden_namespaces:
            message = (
                f'{kind}.{GROUPS[kind]} "{name}" is forbidden: User "system:serviceaccount:registry:workers" '
                f'cannot {verb} resource "{kind}" in API group "{GROUPS[kind]}" in the namespace "{namespace}"'
            )
            raise ApiStatusError(403, "Forbidden", message, _details(kind, name))
        return kind, namespace, name

    def _lookup(self, key: Key) -> _Stored:
        stored = self._objects.get(key)
        if stored is None:
            kind, _, name = key
            raise ApiStatusError(404, "NotFound", f'{kind}.{GROUPS[kind]} "{name}" not found', _details(kind, name))
        return stored

    async def _get_workload(self, request: web.Request) -> web.Response:
        return web.json_response(self._lookup(self._authorize(request, "get")).obj)

    async def _patch_workload(self, request: web.Request) -> web.Response:
        key = self._authorize(request, "patch")
        if request.content_type not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH):
            message = (
                "the body of the request was in an unknown format - accepted media types include: "
                f"{JSON_PATCH}, {MERGE_PATCH}, application/apply-patch+yaml, {STRATEGIC_PATCH}"
            )
            raise ApiStatusError(415, "UnsupportedMediaType", message)
        try:
            patch = json.loads(await request.text())
        except ValueError as exc:
            raise ApiStatusError(400, "BadRequest", f"error decoding patch: {exc}") from None
        stored = self._lookup(key)
        if self._conflicts:
            self._conflicts -= 1
            raise _conflict(key)
        patched = _apply_patch(request.content_type, stored.obj, patch)
        self._commit(key, stored, patched)
        return web.json_response(stored.obj)

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "goVersion": "go1.22.2", "platform": "linux/amd64"}
        )

    async def _core_versions(self, request: web.Request) -> web.Response:
        address = self.url.removeprefix("http://")
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
            }
        )

    async def _group_list(self, request: web.Request) -> web.Response:
        groups = [
            {"name": g, "versions": [v], "preferredVersion": v}
            for g in ("apps", "batch")
            for v in [{"groupVersion": f"{g}/v1", "version": "v1"}]
        ]
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    # -- storage and the simulated controller ----------------------------------------------

    def _commit(self, key: Key, stored: _Stored, patched: Any) -> None:
        current = stored.obj
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata", {}), dict):
            raise ApiStatusError(400, "BadRequest", "the patched object is not a Kubernetes object")
        wanted_version = patched.get("metadata", {}).get("resourceVersion")
        if wanted_version is not None and wanted_version != current["metadata"]["resourceVersion"]:
            raise _conflict(key)
        owned = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp")
        patched["metadata"] = {**patched.get("metadata", {}), **{k: current["metadata"][k] for k in owned}}
        patched.update(apiVersion=current["apiVersion"], kind=current["kind"], status=current["status"])
        _validate(key, patched)
        if patched == current:
            return
        spec_changed = patched["spec"] != current["spec"]
        if spec_changed:
            patched["metadata"]["generation"] += 1
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        stored.obj = patched
        if spec_changed and key[0] != "cronjobs":
            if stored.controller is not None:
                stored.controller.cancel()
            stored.controller = asyncio.create_task(self._roll_out(key[0], stored))

    def _write_status(self, stored: _Stored, status: Json) -> None:
        stored.obj["status"] = status
        stored.obj["metadata"]["resourceVersion"] = str(next(self._versions))

    async def _roll_out(self, kind: str, stored: _Stored) -> None:
        await asyncio.sleep(self.rollout_delay_s)
        images = {c["image"] for c in _pod_template(kind, stored.obj)["spec"]["containers"]}
        healthy = not images & self.failing_images
        previous = stored.obj["status"]
        self._write_status(stored, _converged_status(kind, stored.obj, stored.desired, healthy, previous))
        if healthy or kind != "deployments":
            return
        await asyncio.sleep(max(0.0, self.progress_deadline_s - self.rollout_delay_s))
        status = copy.deepcopy(stored.obj["status"])
        name = stored.obj["metadata"]["name"]
        message = f'ReplicaSet "{name}-{_template_hash(kind, stored.obj)}" has timed out progressing.'
        status["conditions"][1] = _condition("Progressing", "False", "ProgressDeadlineExceeded", message)
        self._write_status(stored, status)


def _details(kind: str, name: str) -> Json:
    return {"name": name, "group": GROUPS[kind], "kind": kind}


def _conflict(key: Key) -> ApiStatusError:
    kind, _, name = key
    message = (
        f'Operation cannot be fulfilled on {kind}.{GROUPS[kind]} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiStatusError(409, "Conflict", message, _details(kind, name))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod_template(kind: str, obj: Json) -> Json:
    spec = obj["spec"]
    return spec["jobTemplate"]["spec"]["template"] if kind == "cronjobs" else spec["template"]  # type: ignore[no-any-return]


def _template_hash(kind: str, obj: Json) -> str:
    text = json.dumps(_pod_template(kind, obj), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _new_workload(kind: str, namespace: str, name: str, containers: Mapping[str, str], replicas: int) -> Json:
    labels = {"app": name}
    pod_spec: Json = {
        "containers": [{"name": c, "image": i, "imagePullPolicy": "IfNotPresent"} for c, i in containers.items()],
        "restartPolicy": "OnFailure" if kind == "cronjobs" else "Always",
    }
    template = {"metadata": {"labels": labels}, "spec": pod_spec}
    spec: Json
    if kind == "cronjobs":
        spec = {
            "schedule": "*/5 * * * *",
            "concurrencyPolicy": "Allow",
            "jobTemplate": {"spec": {"template": template}},
        }
    else:
        spec = {"selector": {"matchLabels": labels}, "template": template}
    if kind in ("deployments", "statefulsets"):
        spec["replicas"] = replicas
    if kind == "deployments":
        spec["progressDeadlineSeconds"] = 600
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    if kind == "statefulsets":
        spec["serviceName"] = name
        spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    metadata = {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.uuid4()),
        "generation": 1,
        "creationTimestamp": _now(),
        "labels": labels,
    }
    return {"apiVersion": f"{GROUPS[kind]}/v1", "kind": KINDS[kind], "metadata": metadata, "spec": spec, "status": {}}


def _condition(kind: str, status: str, reason: str, message: str) -> Json:
    now = _now()
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def _converged_status(kind: str, obj: Json, desired: int, healthy: bool, previous: Json) -> Json:
    """The status a controller reports once it has acted on the object's current generation."""
    generation = obj["metadata"]["generation"]
    ready = desired if healthy else 0
    if kind == "deployments":
        replica_set = f"{obj['metadata']['name']}-{_template_hash(kind, obj)}"
        if healthy:
            available = _condition(
                "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
            )
            progressing = _condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{replica_set}" has successfully progressed.',
            )
        else:
            available = _condition(
                "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
            )
            progressing = _condition(
                "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{replica_set}" is progressing.'
            )
        status = {
            "observedGeneration": generation,
            "replicas": desired,
            "updatedReplicas": ready,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [available, progressing],
        }
        if not healthy:
            status["unavailableReplicas"] = desired
        return status
    if kind == "statefulsets":
        revision = f"{obj['metadata']['name']}-{_template_hash(kind, obj)}"
        return {
            "observedGeneration": generation,
            "replicas": desired,
            "readyReplicas": ready,
            "currentReplicas": ready,
            "updatedReplicas": ready,
            "availableReplicas": ready,
            "currentRevision": revision if healthy else previous.get("currentRevision", revision),
            "updateRevision": revision,
            "collisionCount": 0,
        }
    if kind == "daemonsets":
        status = {
            "observedGeneration": generation,
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": desired,
            "numberMisscheduled": 0,
            "numberReady": ready,
            "numberAvailable": ready,
            "updatedNumberScheduled": ready,
        }
        if not healthy:
            status["numberUnavailable"] = desired
        return status
    return previous


def _validate(key: Key, obj: Json) -> None:
    kind, _, name = key
    causes: list[str] = []
    try:
        containers = _pod_template(kind, obj)["spec"]["containers"]
    except (KeyError, TypeError):
        containers = None
    if not isinstance(containers, list) or not containers:
        causes.append("spec.template.spec.containers: Required value")
    else:
        for index, container in enumerate(containers):
            for attribute in ("name", "image"):
                if not isinstance(container, dict) or not isinstance(container.get(attribute), str):
                    causes.append(f"spec.template.spec.containers[{index}].{attribute}: Required value")
        names = [c.get("name") for c in containers if isinstance(c, dict)]
        if len(set(names)) != len(names):
            causes.append("spec.template.spec.containers: Duplicate value")
    if causes:
        message = f'{KINDS[kind]}.{GROUPS[kind]} "{name}" is invalid: {", ".join(causes)}'
        raise ApiStatusError(422, "Invalid", message, _details(kind, name))


# -- the three patch formats ------------------------------------------------------------------


def _apply_patch(content_type: str, current: Json, patch: Any) -> Any:
    if content_type == JSON_PATCH:
        return json_patch(copy.deepcopy(current), patch)
    if not isinstance(patch, dict):
        raise ApiStatusError(400, "BadRequest", "the patch is not a JSON object")
    if content_type == MERGE_PATCH:
        return merge_patch(current, patch)
    return strategic_merge_patch(current, patch)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` removes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes strategic merge: like RFC 7386, but lists in ``MERGE_KEYS`` merge item by key.

    Supports ``$patch: replace`` on objects and ``$patch: delete`` on list items; other
    directives (``$setElementOrder``, ``$retainKeys``) are accepted and ignored.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _merge_list(result.get(key) or [], value, MERGE_KEYS[key])
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    result = list(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise ApiStatusError(400, "BadRequest", f"map: {item!r} does not contain declared merge key: {merge_key}")
        index = next((i for i, e in enumerate(result) if e.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902 ``add``, ``remove``, ``replace`` and ``test``; a failed operation answers 422."""
    if not isinstance(operations, list):
        raise ApiStatusError(400, "BadRequest", "a JSON patch is a list of operations")
    for operation in operations:
        op, path = operation.get("op"), operation.get("path")
        if op not in ("add", "remove", "replace", "test") or not isinstance(path, str):
            raise ApiStatusError(400, "BadRequest", f"unsupported JSON patch operation {operation!r}")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        try:
            document = _json_patch_step(document, op, tokens, operation.get("value"))
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiStatusError(422, "Invalid", f"{op} operation does not apply: doc is missing path: {path}") from exc
    return document


def _json_patch_step(document: Any, op: str, tokens: list[str], value: Any) -> Any:
    if not tokens:
        if op == "test":
            _expect(document == value)
            return document
        return copy.deepcopy(value)
    parent = document
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" and op == "add" else int(last)
        _expect(index >= 0)
        if op == "add":
            _expect(0 <= index <= len(parent))
            parent.insert(index, copy.deepcopy(value))
        elif op == "test":
            _expect(parent[index] == value)
        elif op == "remove":
            del parent[index]
        else:
            parent[index] = copy.deepcopy(value)
    elif op == "test":
        _expect(parent[last] == value)
    elif op == "remove":
        del parent[last]
    else:
        _expect(op == "add" or last in parent)
        parent[last] = copy.deepcopy(value)
    return document


def _expect(condition: bool) -> None:
    if not condition:
        raise ValueError("test failed")
