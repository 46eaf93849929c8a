"""The Kubernetes manifests, as kustomize renders each overlay: they run real commands with
real settings on the ports the processes listen on, probe real routes, and hold together
(selectors, autoscaler targets, budgets, policies) the way a rollout needs.

`make check-deploy` runs the schema, policy and lint tools; this reads the manifests as the
code sees them.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from aiohttp import web
from xai_sdk.proto import files_pb2

from cli.main import main as cli
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
KUBECTL = Path(sys.executable).with_name("kubectl")

Doc = dict[str, Any]

# The ops listeners' routes, by process (the contract in shared/spec/design.md, "Operating it";
# their apps are built by other modules, so the list is written down here).
OPS_ROUTES = {
    "api": {"/metrics", "/healthz", "/readyz"},
    "edge": {"/metrics", "/healthz", "/readyz"},
    "worker": {"/metrics", "/healthz"},
}
# Which setting holds each named container port, by process.
PORT_SETTINGS = {
    "api": {"http": "api_port", "grpc": "grpc_port", "ops": "ops_port"},
    "edge": {"http": "edge_port", "ops": "edge_ops_port"},
    "worker": {"ops": "worker_ops_port"},
}
# api/server.py stops gRPC with grace=5, then aiohttp's runner waits its shutdown_timeout.
API_GRPC_STOP_GRACE = 5
CLOSE_MARGIN = 5  # closing pools and clients after the drain
EDGE_SECRET_KEYS = {"REDIS_URL", "TOKEN_REDIS_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY"}
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule", "ExternalSecret", "ServiceMonitor"}


def _render(overlay: Path) -> list[Doc]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ copied, with each secret env file taken from its example (as check.sh does)."""
    dst = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, dst, ignore=shutil.ignore_patterns("*.env"))
    for example in dst.rglob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    for env in DEPLOY.rglob("*.env"):  # the committed, non-secret config files
        if "secrets" not in env.parts:
            shutil.copy(env, dst / env.relative_to(DEPLOY))
    return dst


@pytest.fixture(scope="module")
def rendered(copy: Path) -> dict[str, list[Doc]]:
    return {name: _render(copy / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest, rendered: dict[str, list[Doc]]) -> list[Doc]:
    return rendered[request.param]


def _of(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in _of(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _component(deployment: Doc) -> str:
    return str(deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def _pods(docs: list[Doc]) -> Iterator[tuple[Doc, dict[str, Any]]]:
    for d in _of(docs, "Deployment"):
        yield d, d["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions would need more
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _quantity(value: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|m|)", str(value))
    assert m, value
    return float(m.group(1)) * units[m.group(2)]


def _environment(docs: list[Doc], container: dict[str, Any]) -> dict[str, str]:
    """What the process sees: its ConfigMaps and Secrets (envFrom), then its env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= _named(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
        elif "secretRef" in source and _of(docs, "Secret"):
            env |= {k: "set" for k in _named(docs, "Secret", source["secretRef"]["name"])["data"]}
    env |= {e["name"]: e.get("value", "") for e in container.get("env", [])}
    return env


def _main_container(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = pod["containers"]
    return container


# --- what the code must accept ---------------------------------------------------------


def test_every_container_runs_a_filecdn_command_the_cli_parses(docs: list[Doc]) -> None:
    seen = set()
    for _, pod in _pods(docs):
        for c in _containers(pod):
            args = c["args"]
            command = cli.get_command(click.Context(cli), args[0])
            assert command is not None, args
            command.make_context(args[0], list(args[1:]))  # raises on an unknown option
            seen.add(args[0])
    assert seen == {"api", "worker", "edge", "migrate"}


def test_manifests_set_only_real_settings(docs: list[Doc]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    names = set()
    sources = set()  # the ConfigMaps and Secrets containers take their environment from
    for _, pod in _pods(docs):
        for c in _containers(pod):
            names |= {e["name"] for e in c.get("env", [])}
            for ref in c.get("envFrom", []):
                sources |= {r["name"] for r in (ref.get("configMapRef"), ref.get("secretRef")) if r}
    for d in _of(docs, "ConfigMap") + _of(docs, "Secret"):
        if d["metadata"]["name"] in sources:
            names |= set(d.get("data", {}))
    assert names and names <= known, names - known


def test_each_process_reads_settings_that_validate(docs: list[Doc]) -> None:
    for _, pod in _pods(docs):
        for c in _containers(pod):
            env = {k: v for k, v in _environment(docs, c).items() if v != "set"}
            Settings.from_env(env)  # raises on a bad value


def test_container_ports_are_the_ports_the_processes_listen_on(docs: list[Doc]) -> None:
    for deployment, pod in _pods(docs):
        process = _component(deployment)
        container = _main_container(pod)
        settings = Settings.from_env(
            {k: v for k, v in _environment(docs, container).items() if v != "set"}
        )
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        expected = {name: getattr(settings, s) for name, s in PORT_SETTINGS[process].items()}
        assert ports == expected, process
        assert settings.ops_host == "0.0.0.0", f"{process}: probes and Prometheus come from outside"
        if process == "api":
            assert settings.api_host == "0.0.0.0"
        if process == "edge":
            assert settings.edge_host == "0.0.0.0"


def test_probes_hit_real_ops_routes_with_timeouts_that_fit(docs: list[Doc]) -> None:
    for deployment, pod in _pods(docs):
        process = _component(deployment)
        container = _main_container(pod)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            http = probe["httpGet"]
            assert http["port"] == "ops", f"{process} {kind} must use the ops listener"
            assert http["path"] in OPS_ROUTES[process], (process, kind, http["path"])
            # /readyz waits up to 2 s per dependency (in parallel); 1 s, the default, is too short.
            assert probe["timeoutSeconds"] >= (3 if http["path"] == "/readyz" else 2)
        # Liveness must not restart a pod because a dependency is down.
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_ops_ports_are_on_no_service(docs: list[Doc]) -> None:
    for service in _of(docs, "Service"):
        targets = {p["targetPort"] for p in service["spec"]["ports"]}
        assert "ops" not in targets
        assert not targets & {8090, 8091, 8093}
    edge = _named(docs, "Service", "filecdn-edge")
    assert [p["targetPort"] for p in edge["spec"]["ports"]] == ["http"]


# --- scaling and stopping --------------------------------------------------------------


def test_autoscaled_deployments_leave_replicas_to_their_hpa(docs: list[Doc]) -> None:
    hpas = _of(docs, "HorizontalPodAutoscaler")
    assert {h["metadata"]["name"] for h in hpas} == {"filecdn-api", "filecdn-edge"}
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
        target = _named(docs, "Deployment", ref["name"])
        assert "replicas" not in target["spec"], "an apply would reset the HPA's count"
        behavior = hpa["spec"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
        assert behavior["scaleDown"]["policies"]


def test_every_deployment_rolls_without_losing_capacity_and_spreads(docs: list[Doc]) -> None:
    budgets = _of(docs, "PodDisruptionBudget")
    for deployment, pod in _pods(docs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _selects(deployment["spec"]["selector"], labels)
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        keys = set()
        for constraint in pod["topologySpreadConstraints"]:
            assert _selects(constraint["labelSelector"], labels)
            keys.add(constraint["topologyKey"])
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert [b for b in budgets if _selects(b["spec"]["selector"], labels)], labels


def test_services_select_pods_that_have_their_target_ports(docs: list[Doc]) -> None:
    for service in _of(docs, "Service"):
        matches = [
            (d, pod)
            for d, pod in _pods(docs)
            if all(
                d["spec"]["template"]["metadata"]["labels"].get(k) == v
                for k, v in service["spec"]["selector"].items()
            )
        ]
        assert len(matches) == 1, service["metadata"]["name"]
        names = {p["name"] for p in _main_container(matches[0][1])["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_grace_periods_cover_prestop_and_each_process_drain(docs: list[Doc]) -> None:
    aiohttp_shutdown = (
        inspect.signature(web.BaseRunner.__init__).parameters["shutdown_timeout"].default
    )
    for deployment, pod in _pods(docs):
        process = _component(deployment)
        container = _main_container(pod)
        edge = Settings.from_env(
            {k: v for k, v in _environment(docs, container).items() if v != "set"}
        )
        drains = {
            "api": API_GRPC_STOP_GRACE + aiohttp_shutdown,
            # SIGTERM: serve on with /readyz 503 for the delay, then let responses finish.
            "edge": edge.edge_drain_delay + edge.edge_drain_timeout,
        }
        if process not in drains:
            continue
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        need = int(command[1]) + drains[process] + CLOSE_MARGIN
        assert pod["terminationGracePeriodSeconds"] >= need, process


# --- migrations, security, resources ---------------------------------------------------


def test_database_users_migrate_before_they_start_and_the_edge_never_sees_the_database(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["production"]
    for deployment, pod in _pods(docs):
        env = _environment(docs, _main_container(pod))
        inits = [c["args"] for c in pod.get("initContainers", [])]
        if "DATABASE_URL" in env:
            assert inits == [["migrate"]], deployment["metadata"]["name"]
        else:
            assert _component(deployment) == "edge"
    edge = _main_container(_named(docs, "Deployment", "filecdn-edge")["spec"]["template"]["spec"])
    [secret] = [s["secretRef"]["name"] for s in edge["envFrom"] if "secretRef" in s]
    assert re.fullmatch(r"filecdn-edge-[a-z0-9]{10}", secret)  # kustomize's content hash
    assert set(_named(docs, "Secret", secret)["data"]) <= EDGE_SECRET_KEYS
    egress = _named(docs, "NetworkPolicy", "filecdn-edge-egress")["spec"]["egress"]
    assert 5432 not in {p["port"] for rule in egress for p in rule["ports"]}


def test_pods_meet_pod_security_restricted(docs: list[Doc]) -> None:
    namespace = _named(docs, "Namespace", "filecdn")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for _, pod in _pods(docs):
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in _containers(pod):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts, "a read-only root still needs a writable /tmp"


def test_every_container_has_requests_and_limits(docs: list[Doc]) -> None:
    for _, pod in _pods(docs):
        for c in _containers(pod):
            for bound in ("requests", "limits"):
                assert set(c["resources"][bound]) == {"cpu", "memory", "ephemeral-storage"}


def test_edge_disk_cache_fits_its_volume_and_ephemeral_storage(docs: list[Doc]) -> None:
    pod = _named(docs, "Deployment", "filecdn-edge")["spec"]["template"]["spec"]
    container = _main_container(pod)
    settings = Settings.from_env(
        {k: v for k, v in _environment(docs, container).items() if v != "set"}
    )
    cache_bytes = settings.edge_disk_cache_bytes
    [mount] = [
        m for m in container["volumeMounts"] if Path(m["mountPath"]) == settings.edge_cache_dir
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mount["name"]]["emptyDir"].get("medium") is None  # disk, not memory
    size_limit = _quantity(volumes[mount["name"]]["emptyDir"]["sizeLimit"])
    assert size_limit >= 1.25 * cache_bytes, "room for fills under way past the trim's cap"
    all_volumes = sum(_quantity(v["emptyDir"]["sizeLimit"]) for v in pod["volumes"])
    storage = container["resources"]
    assert _quantity(storage["limits"]["ephemeral-storage"]) >= all_volumes + 256 * 2**20  # logs
    assert _quantity(storage["requests"]["ephemeral-storage"]) >= cache_bytes


# --- network, ingress, monitoring, secrets ---------------------------------------------


def test_network_policies_deny_by_default_and_name_real_ports(docs: list[Doc]) -> None:
    policies = _of(docs, "NetworkPolicy")
    deny = _named(docs, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = _named(docs, "NetworkPolicy", "allow-dns")["spec"]["egress"][0]["ports"]
    assert {(p["protocol"], p["port"]) for p in dns} == {("UDP", 53), ("TCP", 53)}
    for policy in policies:
        selected = [
            pod
            for d, pod in _pods(docs)
            if _selects(policy["spec"]["podSelector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert selected, policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                if isinstance(port["port"], str):
                    for pod in selected:
                        names = {p["name"] for p in _main_container(pod)["ports"]}
                        assert port["port"] in names, (policy["metadata"]["name"], port)


def test_prometheus_scrapes_every_ops_port(docs: list[Doc]) -> None:
    monitors = _of(docs, "PodMonitor")
    for deployment, _ in _pods(docs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [m for m in monitors if _selects(m["spec"]["selector"], labels)]
        assert len(covering) == 1, deployment["metadata"]["name"]
        endpoints = covering[0]["spec"]["podMetricsEndpoints"]
        assert [(e["port"], e["path"]) for e in endpoints] == [("ops", "/metrics")]


def test_ingresses_route_to_real_service_ports_and_admit_full_uploads(docs: list[Doc]) -> None:
    limit = Settings().max_upload_bytes
    for ingress in _of(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = _named(docs, "Service", backend["name"])
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    for name in ("filecdn-api-rest", "filecdn-api-grpc"):
        annotations = _named(docs, "Ingress", name)["metadata"]["annotations"]
        body = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert _quantity(body.replace("m", "Mi")) > limit
    grpc = _named(docs, "Ingress", "filecdn-api-grpc")
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    # The path is the service the SDK calls: /<package>.<service>/<method>.
    [service] = files_pb2.DESCRIPTOR.services_by_name.values()
    [path] = [p["path"] for r in grpc["spec"]["rules"] for p in r["http"]["paths"]]
    assert path == f"/{service.full_name}"


def test_every_namespaced_resource_lands_in_the_filecdn_namespace(docs: list[Doc]) -> None:
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "filecdn", (d["kind"], d["metadata"]["name"])


def test_each_overlay_provides_every_secret_the_pods_use(docs: list[Doc]) -> None:
    provided = {s["metadata"]["name"] for s in _of(docs, "Secret")}
    provided |= {e["spec"]["target"]["name"] for e in _of(docs, "ExternalSecret")}
    for _, pod in _pods(docs):
        for c in _containers(pod):
            for source in c["envFrom"]:
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in provided


def test_nothing_with_placeholder_credentials_renders_by_default(tmp_path: Path) -> None:
    committed = subprocess.run(
        ["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [f for f in committed if f.endswith(".env") and "/secrets/" in f]
    for f in committed:
        if f.endswith((".yaml", ".yml")):
            kinds = {d.get("kind") for d in yaml.safe_load_all((ROOT / f).read_text()) if d}
            assert "Secret" not in kinds, f
    # Without the operator's env files the overlay refuses to build rather than apply examples.
    clean = tmp_path / "deploy"
    shutil.copytree(DEPLOY, clean, ignore=shutil.ignore_patterns("*.env"))
    for env in DEPLOY.rglob("*.env"):
        if "secrets" not in env.parts:
            shutil.copy(env, clean / env.relative_to(DEPLOY))
    with pytest.raises(subprocess.CalledProcessError):
        _render(clean / "overlays" / "production")
    assert _render(clean / "base")  # the base alone holds no Secret either


# --- the image -------------------------------------------------------------------------


def test_image_is_pinned_and_installs_only_from_the_hashed_lock() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert bases and all(re.search(r"@sha256:[0-9a-f]{64}$", b) for b in bases), bases
    installs = re.findall(r"pip install[^\n]*", dockerfile.replace("\\\n", " "))
    assert "--require-hashes" in installs[0] and "-r requirements/runtime.lock" in installs[0]
    assert all("--no-deps" in i for i in installs)
    assert re.search(r"^USER 10001", dockerfile, flags=re.M)


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    return {m[0]: m[1] for m in re.findall(r"^([a-z0-9][a-z0-9._-]*)==([^ ;\\\n]+)", text, re.M)}


def test_locks_hold_every_dependency_of_pyproject_at_one_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {
            re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements
        }

    runtime, dev = _pins("runtime.lock"), _pins("dev.lock")
    assert names(project["dependencies"]) <= set(runtime), "run make lock"
    extras = project["optional-dependencies"]
    assert names(extras["local"] + extras["dev"]) <= set(dev), "run make lock"
    assert {k: dev[k] for k in runtime} == runtime, "the tests run what the image ships"


# --- monitoring: the dashboard and the alerts read metrics that exist ------------------------

# The edge's Prometheus names, as the `edge` branch's cdn_edge/metrics.py writes them (the
# source scan below finds them there once it is merged).
EDGE_METRICS = {
    "filecdn_edge_requests_total",
    "filecdn_edge_response_bytes_total",
    "filecdn_edge_cache_requests_total",
    "filecdn_edge_request_duration_seconds",
    "filecdn_edge_origin_requests_total",
    "filecdn_edge_origin_bytes_total",
    "filecdn_edge_disk_cache_bytes",
    "filecdn_edge_disk_cache_limit_bytes",
}
MONITORING = DEPLOY / "components" / "monitoring"


def _exported_metrics() -> tuple[set[str], set[str]]:
    """(every metric name the processes export, the histograms among them): the API's and
    the worker's registries, plus the families our collectors build by name."""
    import prometheus_client

    import api.request_metrics  # noqa: F401  (importing registers their families)
    import shared.metrics  # noqa: F401
    import worker.metrics  # noqa: F401

    text = prometheus_client.generate_latest().decode()
    typed = dict(re.findall(r"^# TYPE (filecdn_\S+) (\S+)$", text, re.M))
    names = set(typed)
    for source in [*ROOT.glob("api/*.py"), *ROOT.glob("worker/*.py"), *ROOT.glob("cdn_edge/*.py")]:
        names |= set(re.findall(r'"(filecdn_[a-z0-9_]+)"', source.read_text()))
    return names | EDGE_METRICS, {n for n, kind in typed.items() if kind == "histogram"} | {
        "filecdn_edge_request_duration_seconds"
    }


def _referenced(expr: str) -> set[str]:
    return set(re.findall(r"\bfilecdn_[a-z0-9_]+", expr))


def _assert_exported(exprs: list[str]) -> None:
    names, histograms = _exported_metrics()
    for expr in exprs:
        for name in _referenced(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in names or (base in histograms and base != name), (name, expr)


def test_alert_rules_read_only_metrics_the_processes_export() -> None:
    docs = list(yaml.safe_load_all((MONITORING / "prometheusrules.yaml").read_text()))
    exprs = [r["expr"] for d in docs for g in d["spec"]["groups"] for r in g["rules"]]
    assert len(exprs) >= 10
    _assert_exported(exprs)
    alerts = {r["alert"] for d in docs for g in d["spec"]["groups"] for r in g["rules"]}
    tested = set(
        re.findall(r"alertname: (\w+)", (MONITORING / "prometheusrules.test.yaml").read_text())
    )
    assert alerts - {"FilecdnOpsEndpointDown"} <= tested, "every alert has a promtool unit test"


def test_grafana_dashboard_ships_for_the_sidecar_and_charts_exported_metrics(
    docs: list[Doc],
) -> None:
    (cm,) = [
        d for d in _of(docs, "ConfigMap") if d["metadata"]["name"] == "filecdn-grafana-dashboard"
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["filecdn.json"])
    assert dashboard["uid"] == "filecdn-ops"
    charts = [p for p in dashboard["panels"] if p["type"] not in ("row", "text")]
    assert len(charts) >= 15
    exprs = [t["expr"] for p in charts for t in p["targets"]]
    assert all(t["datasource"]["uid"] == "${datasource}" for p in charts for t in p["targets"])
    assert all('namespace=~"$namespace"' in e for e in exprs)
    _assert_exported(exprs)
    titles = " ".join(p["title"] for p in charts)
    for panel in ("Edge requests", "latency", "Origin", "API errors", "Job queue", "Expiry lag"):
        assert panel in titles, panel
