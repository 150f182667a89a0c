"""deploy/k8s: every manifest valid for the Kubernetes API, and consistent with Switchboard itself.

Schemas: kubernetes-validate (its bundled OpenAPI-derived JSON schemas, strict: an unknown field is
an error) at the oldest and newest Kubernetes versions we name. Semantics, checked against the code
rather than against a copy of it: the settings model, the command line parser, the console's routes
and its /metrics, the Dockerfile's user.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from adapters import CHANNELS
from adapters.sandbox import SandboxUsers
from router.config import Settings
from router.console import ConsoleServer, create_app
from router.redis import check_cluster_prefix, is_cluster
from router.runtime import Runtime
from tests.conftest import RedisProcess
from tests.deploy.manifests import (
    ADAPTER_RULES,
    DEPLOY,
    K8S,
    KUSTOMIZATION,
    SECRET_EXAMPLE,
    SERVICE_COMMANDS,
    Role,
    applied,
    channel_sections,
    documents,
    k8s_roles,
    kustomization,
    of_kind,
    role_settings,
    secret_examples,
    selects,
    setting_problem,
)

#: The oldest Kubernetes release the manifests are meant for (autoscaling/v2 and policy/v1 are GA
#: since 1.23/1.21; managed offerings support about the last four), and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
#: Files under deploy/k8s that are not Kubernetes resources.
NOT_RESOURCES = {KUSTOMIZATION.name}


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_RESOURCES)


def validate(resource: dict[str, Any], version: str) -> None:
    # SchemaNotFoundError (an unknown kind or apiVersion) is raised too: only the CLI turns it into a warning.
    kubernetes_validate.validate(resource, version, strict=True)


# -- schemas -----------------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_manifest_validates_against_the_api_schema(path: Path, version: str) -> None:
    resources = documents(path)
    assert resources, f"{path.name} holds no resource"
    for resource in resources:
        validate(resource, version)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (lambda d: d["spec"].update(replicaz=2), "an unknown field"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(ports=[{"containerPort": "http"}]), "a type"),
        (lambda d: d["spec"].pop("selector"), "a required field"),
    ],
    ids=["unknown-field", "wrong-type", "missing-required"],
)
def test_the_schema_check_refuses_a_broken_deployment(change: Any, what: str) -> None:
    deployment = copy.deepcopy(of_kind(applied(), "Deployment")[0])
    validate(deployment, KUBERNETES_VERSIONS[0])
    change(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[0])


def test_the_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    k = kustomization()
    assert set(k) <= {"apiVersion", "kind", "namespace", "resources", "images"}, set(k)
    listed = set(k["resources"])
    assert all((K8S / name).is_file() for name in listed), listed
    # The Secret example is never applied: an apply would overwrite real secrets with placeholders.
    assert listed == {p.name for p in manifest_files()} - {SECRET_EXAMPLE.name}
    resources = applied()
    assert not of_kind(resources, "Secret")
    [namespace] = of_kind(resources, "Namespace")
    assert namespace["metadata"]["name"] == k["namespace"]
    for resource in [*resources, *documents(SECRET_EXAMPLE)]:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == k["namespace"], resource["metadata"]["name"]
    # Every container's image is the one the kustomization rewrites to the operator's registry.
    images = {i["name"] for i in k["images"]}
    for deployment in of_kind(resources, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"] in images


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed")
def test_kubectl_kustomize_builds_the_base() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], check=True, capture_output=True, text=True, timeout=60)
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    key = lambda r: (r["kind"], r["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, built)) == sorted(map(key, applied()))
    for resource in built:
        validate(resource, KUBERNETES_VERSIONS[0])


# -- what runs in each pod -----------------------------------------------------------------------
def test_every_container_runs_a_switchboard_service_command() -> None:
    commands = {role.name: role.args.command for role in k8s_roles()}
    assert commands == {
        "switchboard-workers": "worker",
        "switchboard-console": "web",
        "switchboard-adapters": "run",
    }
    assert set(commands.values()) <= SERVICE_COMMANDS
    # The same command line as the image's ENTRYPOINT: the args go to `switchboard`.
    assert re.search(r'^ENTRYPOINT \["switchboard"\]$', (DEPLOY / "Dockerfile").read_text(), re.M)


def test_a_command_the_parser_refuses_is_caught() -> None:
    role = Role("x", ["--config", "/etc/switchboard/switchboard.toml", "adapters"], {})
    with pytest.raises(AssertionError, match="refused by the command line parser"):
        _ = role.args


def all_variables() -> set[str]:
    names = {name for secret in secret_examples().values() for name in secret}
    for deployment in of_kind(applied(), "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= {var["name"] for var in container.get("env") or []}
    return names


def test_every_switchboard_variable_is_a_setting() -> None:
    names = all_variables()
    assert "SWITCHBOARD_REDIS__URL" in names and "SWITCHBOARD_TELEGRAM__TOKEN" in names
    assert [p for name in sorted(names) if (p := setting_problem(name))] == []


@pytest.mark.parametrize(
    "name",
    ["SWITCHBOARD_WEB__PORTT", "SWITCHBOARD_NOPE", "SWITCHBOARD_WEB", "SWITCHBOARD_WEB__PORT__X", "REDIS_URL"],
)
def test_a_misspelt_variable_is_caught(name: str) -> None:
    assert setting_problem(name) is not None


def test_each_pod_starts_with_its_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for role in k8s_roles():
        settings = role_settings(role, tmp_path, monkeypatch)
        # A cluster URL, and a prefix whose hash tag keeps the deployment in one slot.
        assert is_cluster(settings.redis_url), role.name
        check_cluster_prefix(settings.redis_url, settings.prefix)
        if role.args.command == "run":
            # The adapters pods: every channel of the example validates, its secret read.
            assert sorted(channel_sections(settings)) == ["discord", "email", "telegram"]
        # Channel secrets go to the adapters only.
        channels = {
            name for name in role.environ if name.split("__")[0].removeprefix("SWITCHBOARD_").lower() in CHANNELS
        }
        assert bool(channels) == (role.args.command == "run"), role.name


def test_a_channel_setting_that_does_not_validate_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [adapters_role] = [r for r in k8s_roles() if r.args.command == "run"]
    adapters_role.environ["SWITCHBOARD_TELEGRAM__TOKN"] = "123:abc"
    settings = role_settings(adapters_role, tmp_path, monkeypatch)
    with pytest.raises(Exception, match="tokn"):
        list(channel_sections(settings))


def test_the_redis_url_is_required_not_optional() -> None:
    # Without it Switchboard would start a private redis-server inside the pod, in an emptyDir.
    for role in k8s_roles():
        [url] = [v for v in role.container.get("env") or [] if v["name"] == "SWITCHBOARD_REDIS__URL"]
        ref = url["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "SWITCHBOARD_REDIS__URL" and not ref.get("optional", False), role.name


def test_pods_run_hardened_as_the_images_user() -> None:
    uid = int(re.search(r"useradd .*--uid (\d+)", (DEPLOY / "Dockerfile").read_text())[1])  # type: ignore[index]
    for role in k8s_roles():
        pod, container = role.pod, role.container
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        # Service links would add SWITCHBOARD_CONSOLE_SERVICE_HOST and the like to the environment.
        assert pod["enableServiceLinks"] is False
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (role.name, kind)


def test_writable_directories_are_volumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a read-only root, the console's data_dir (first admin's password file) and /tmp are volumes."""
    for role in k8s_roles():
        settings = role_settings(role, tmp_path, monkeypatch)
        writable = {m["mountPath"] for m in role.container["volumeMounts"] if not m.get("readOnly")}
        assert "/tmp" in writable, role.name
        if serves_console(role, settings.web.enabled):
            assert str(settings.redis.data_dir) in writable, role.name


# -- probes and the console ----------------------------------------------------------------------
def serves_console(role: Role, web_enabled: bool) -> bool:
    return role.args.command == "web" or (role.args.command == "run" and web_enabled)


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container.get("ports") or [] if p["name"] == port]
    return int(number)


async def test_probes_are_console_routes_on_the_port_it_serves(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probed = {}
    for role in k8s_roles():
        probes = {
            kind: role.container[kind]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
            if kind in role.container
        }
        if role.args.command == "worker":
            assert not probes, "`switchboard worker` serves no HTTP"
            continue
        settings = role_settings(role, tmp_path, monkeypatch)
        assert serves_console(role, settings.web.enabled), role.name
        # Listening on every interface (else the kubelet cannot reach it) on the probed port.
        web_args = role.args.command == "web"
        assert (role.args.host if web_args and role.args.host else settings.web.host) == "0.0.0.0", role.name
        port = role.args.port if web_args and role.args.port is not None else settings.web.port
        assert {container_port(role.container, p["httpGet"]["port"]) for p in probes.values()} == {port}
        # Liveness must not ask Redis (an outage would restart every pod); readiness does.
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
        probed[role.name] = (settings, {p["httpGet"]["path"] for p in probes.values()})
    assert set(probed) == {"switchboard-console", "switchboard-adapters"}

    for settings, paths in probed.values():
        # The console app with the pod's own web settings, over the test's Redis, on loopback.
        web = settings.web.model_copy(update={"host": "127.0.0.1", "port": 0})
        app = create_app(rt, rt.settings.model_copy(update={"web": web}), SandboxUsers(rt.channel_context()))
        assert paths <= {getattr(r, "path", None) for r in app.routes}
        server = ConsoleServer(app, "127.0.0.1", 0)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                for path in sorted(paths):
                    response = await client.get(path)
                    assert response.status_code == 200 and response.json()["ok"] is True, (path, response.text)
        finally:
            await server.close()


async def test_readiness_follows_redis_and_liveness_does_not(settings: Settings, tmp_path: Path) -> None:
    """What the probes mean for Kubernetes: a Redis outage takes a pod out of the Service
    (/readyz 503, with the reason) but never gets it restarted (/healthz stays 200)."""
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    try:
        async with Runtime(settings, redis.url) as rt:
            web = settings.web.model_copy(update={"port": 0, "admin_password": SecretStr("correct horse battery")})
            server = ConsoleServer(create_app(rt, settings.model_copy(update={"web": web})), "127.0.0.1", 0)
            await server.start()
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                    assert (await client.get("/readyz")).status_code == 200
                    redis.stop()
                    ready = await client.get("/readyz")
                    assert ready.status_code == 503 and ready.json()["ok"] is False and ready.json()["redis"]
                    assert (await client.get("/healthz")).status_code == 200
                    redis.start()
                    assert (await client.get("/readyz")).status_code == 200
            finally:
                await server.close()
    finally:
        redis.stop()


async def test_the_hpa_metric_is_served_and_published_by_the_adapter_rule(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [hpa] = of_kind(applied(), "HorizontalPodAutoscaler")
    [metric] = hpa["spec"]["metrics"]
    name = metric["external"]["metric"]["name"]
    # prometheus-adapter publishes that name from the series of the same name.
    [rule] = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["external"]
    assert rule["name"]["as"] == name and re.fullmatch(rule["name"]["matches"], name)
    assert rule["seriesQuery"].startswith(name + "{") and rule["metricsQuery"].startswith("max(")
    # The console pods serve it on /metrics to a scraper holding the metrics token.
    [console] = [r for r in k8s_roles() if r.args.command == "web"]
    settings = role_settings(console, tmp_path, monkeypatch)
    web = settings.web.model_copy(update={"port": 0})
    app = create_app(rt, rt.settings.model_copy(update={"web": web}))
    server = ConsoleServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        token = console.environ["SWITCHBOARD_WEB__METRICS_TOKEN"]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            response = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            refused = await client.get("/metrics")
    finally:
        await server.close()
    assert response.status_code == 200 and refused.status_code == 401
    assert re.search(rf"^{name} \d", response.text, re.M), response.text[:500]


# -- selectors -----------------------------------------------------------------------------------
def pod_labels() -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in of_kind(applied(), "Deployment")
    }


def selected(selector: dict[str, Any]) -> list[str]:
    """The Deployments whose pods ``selector`` selects."""
    return [name for name, labels in pod_labels().items() if selects(selector, labels)]


def test_deployment_selectors_match_their_own_pods_only() -> None:
    for deployment in of_kind(applied(), "Deployment"):
        name, spec = deployment["metadata"]["name"], deployment["spec"]
        assert selected(spec["selector"]) == [name]
        pod = spec["template"]["spec"]
        spread = [c["labelSelector"] for c in pod.get("topologySpreadConstraints") or []]
        anti = [
            t["labelSelector"]
            for t in pod.get("affinity", {})
            .get("podAntiAffinity", {})
            .get("requiredDuringSchedulingIgnoredDuringExecution", [])
        ]
        for selector in spread + anti:
            assert selected(selector) == [name]


def test_service_and_pdbs_select_one_deployment() -> None:
    resources = applied()
    labels = pod_labels()
    [service] = of_kind(resources, "Service")
    assert selected({"matchLabels": service["spec"]["selector"]}) == ["switchboard-console"]
    [console] = [d for d in of_kind(resources, "Deployment") if d["metadata"]["name"] == "switchboard-console"]
    container = console["spec"]["template"]["spec"]["containers"][0]
    for port in service["spec"]["ports"]:
        container_port(container, port["targetPort"])
    replicas = {d["metadata"]["name"]: d["spec"].get("replicas") for d in of_kind(resources, "Deployment")}
    [hpa] = of_kind(resources, "HorizontalPodAutoscaler")
    replicas[hpa["spec"]["scaleTargetRef"]["name"]] = hpa["spec"]["minReplicas"]
    budgets = {}
    for pdb in of_kind(resources, "PodDisruptionBudget"):
        [target] = selected(pdb["spec"]["selector"])
        budgets[target] = pdb
        # A budget that forbids every eviction would block node drains for good.
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < replicas[target], target
        else:
            assert pdb["spec"]["maxUnavailable"] >= 1
    assert set(budgets) == set(labels)


def test_the_hpa_scales_the_workers_deployment() -> None:
    resources = applied()
    [hpa] = of_kind(resources, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    [deployment] = [d for d in of_kind(resources, "Deployment") if d["metadata"]["name"] == target["name"]]
    assert target["kind"] == "Deployment" and target["apiVersion"] == "apps/v1"
    [role] = [r for r in k8s_roles() if r.name == target["name"]]
    assert role.args.command == "worker"
    # The HPA owns the count: a replicas field would reset it at every apply.
    assert "replicas" not in deployment["spec"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # Adapters keep their fixed pair (leases: one polls, one stands by).
    [adapters] = [d for d in of_kind(resources, "Deployment") if d["metadata"]["name"] == "switchboard-adapters"]
    assert adapters["spec"]["replicas"] == 2


# -- network policies ----------------------------------------------------------------------------
def allowed(role_labels: dict[str, str], direction: str) -> tuple[bool, set[int]]:
    """(isolated, the TCP/UDP ports allowed) in ``direction`` ("Ingress"/"Egress") for pods with these labels."""
    isolated, ports = False, set()
    for policy in of_kind(applied(), "NetworkPolicy"):
        spec = policy["spec"]
        if not selects(spec["podSelector"], role_labels) or direction not in spec["policyTypes"]:
            continue
        isolated = True
        for rule in spec.get(direction.lower()) or []:
            assert rule.get("ports"), f"{policy['metadata']['name']}: a rule without ports allows every port"
            ports |= {p["port"] for p in rule["ports"]}
    return isolated, ports


def test_network_policies_select_existing_pods() -> None:
    for policy in of_kind(applied(), "NetworkPolicy"):
        assert selected(policy["spec"]["podSelector"]), policy["metadata"]["name"]


def test_network_policies_allow_each_role_what_it_needs_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = pod_labels()
    redis_ports = set()
    for role in k8s_roles():
        url = role_settings(role, tmp_path, monkeypatch).redis_url
        redis_ports |= {int(hp.rpartition(":")[2]) for hp in url.rpartition("@")[2].split(",")}
    expected_egress = {
        "switchboard-workers": {53} | redis_ports,
        "switchboard-console": {53} | redis_ports,
        # HTTPS (Telegram, Discord), IMAP (993 TLS, 143 STARTTLS), SMTP submission (465, 587).
        "switchboard-adapters": {53, 443, 993, 143, 465, 587} | redis_ports,
    }
    for name, pod in labels.items():
        assert allowed(pod, "Egress") == (True, expected_egress[name]), name
    console_port = container_port(next(r.container for r in k8s_roles() if r.name == "switchboard-console"), "http")
    assert allowed(labels["switchboard-console"], "Ingress") == (True, {console_port})
    # The adapters serve the console for their probes only; the kubelet's probes pass any policy.
    assert allowed(labels["switchboard-adapters"], "Ingress") == (True, set())
    assert allowed(labels["switchboard-workers"], "Ingress") == (True, set())
