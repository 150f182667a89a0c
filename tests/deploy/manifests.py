"""Reading deploy/ as Kubernetes and Compose would, and what each pod or service would run.

A *role* is one container of a Deployment (or one Compose service): the ``switchboard`` arguments
it is started with, the ``SWITCHBOARD_…`` environment it gets (the Secret example's placeholder
values where it takes a Secret) and the configuration file its ``--config`` names (from the
ConfigMap mounted there). ``role_settings`` loads that exactly as the process would at start.
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

import adapters
from router.cli import build_parser
from router.config import DEFAULT_CONFIG, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
ADAPTER_RULES = K8S / "extras" / "prometheus-adapter-values.yaml"
ENV_PREFIX = "SWITCHBOARD_"
#: The commands that serve until SIGTERM: the only ones a long-running container may run.
SERVICE_COMMANDS = frozenset({"run", "worker", "web"})


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomization() -> dict[str, Any]:
    [doc] = documents(KUSTOMIZATION)
    return doc


def applied() -> list[dict[str, Any]]:
    """Every resource ``kubectl apply -k deploy/k8s`` creates, in the kustomization's order."""
    return [doc for name in kustomization()["resources"] for doc in documents(K8S / name)]


def secret_examples() -> dict[str, dict[str, str]]:
    """The Secrets the operator creates (not applied by the kustomization): name -> data."""
    found = {}
    for doc in documents(SECRET_EXAMPLE):
        assert doc["kind"] == "Secret", doc["kind"]
        found[doc["metadata"]["name"]] = dict(doc.get("stringData") or {})
    return found


def of_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


@dataclass
class Role:
    """One container of a Deployment, or one Compose service."""

    name: str
    argv: list[str]
    environ: dict[str, str]
    config_text: str | None = None
    container: dict[str, Any] = field(default_factory=dict)
    pod: dict[str, Any] = field(default_factory=dict)

    @property
    def args(self) -> argparse.Namespace:
        return parse_command(self.argv)


def parse_command(argv: list[str]) -> argparse.Namespace:
    """``switchboard ARGV`` through the real parser; an AssertionError naming the arguments if it refuses."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"switchboard {' '.join(argv)}: refused by the command line parser") from exc


def k8s_roles(resources: list[dict[str, Any]] | None = None) -> list[Role]:
    resources = applied() if resources is None else resources
    config_maps = {c["metadata"]["name"]: c.get("data") or {} for c in of_kind(resources, "ConfigMap")}
    secrets = secret_examples()
    roles = []
    for deployment in of_kind(resources, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for container in pod["containers"]:
            if container.get("command", ["switchboard"]) != ["switchboard"]:
                raise AssertionError(f"{deployment['metadata']['name']}: command must be the image's switchboard")
            environ: dict[str, str] = {}
            for source in container.get("envFrom") or []:
                ref = source["secretRef"]["name"]
                assert ref in secrets, f"{deployment['metadata']['name']}: no Secret {ref} in {SECRET_EXAMPLE.name}"
                environ.update(secrets[ref])
            for var in container.get("env") or []:
                if "value" in var:
                    environ[var["name"]] = var["value"]
                else:
                    ref = var["valueFrom"]["secretKeyRef"]
                    assert ref["key"] in secrets.get(ref["name"], {}), f"{var['name']}: no key {ref} in the Secrets"
                    environ[var["name"]] = secrets[ref["name"]][ref["key"]]
            argv = list(container["args"])
            role = Role(deployment["metadata"]["name"], argv, environ, container=container, pod=pod)
            config = parse_command(argv).config
            if config is not None:
                role.config_text = _mounted_file(PurePosixPath(str(config)), container, volumes, config_maps)
            roles.append(role)
    return roles


def _mounted_file(
    path: PurePosixPath, container: dict[str, Any], volumes: dict[str, Any], config_maps: dict[str, Any]
) -> str:
    """The content of ``path`` in the container: a key of a ConfigMap mounted at its directory."""
    for mount in container.get("volumeMounts") or []:
        if PurePosixPath(mount["mountPath"]) == path.parent and "subPath" not in mount:
            volume = volumes[mount["name"]]
            assert "configMap" in volume, f"{path}: {mount['name']} is not a ConfigMap volume"
            data = config_maps[volume["configMap"]["name"]]
            assert path.name in data, f"{path}: ConfigMap {volume['configMap']['name']} has no key {path.name}"
            return str(data[path.name])
    raise AssertionError(f"{path}: no ConfigMap is mounted at {path.parent}")


def role_settings(role: Role, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The role's settings, loaded as its process loads them: its config file, then its environment."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in role.environ.items():
        monkeypatch.setenv(name, value)
    # Without a config file, the one in the working directory would be read: let it be none.
    monkeypatch.chdir(tmp_path)
    config = None
    if role.config_text is not None:
        config = tmp_path / f"{role.name}.toml"
        config.write_text(role.config_text, encoding="utf-8")
    return load_settings(config)


def setting_problem(name: str) -> str | None:
    """Why ``name`` is no setting of router/config.py (pydantic-settings ignores an unknown
    ``SWITCHBOARD_…`` variable without a word, so a typo would silently change nothing); None if it
    is one. A channel's keys are checked by the channel's own parser (``channel_sections``)."""
    if not name.startswith(ENV_PREFIX):
        return f"{name}: not a Switchboard variable ({ENV_PREFIX}…)"
    parts = name.removeprefix(ENV_PREFIX).lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the top level"
        fields = model.model_fields
        if part not in fields:
            return f"{name}: {where} has no setting {part!r}"
        if model is Settings and part in adapters.CHANNELS:
            return None
        annotation = fields[part].annotation
        rest = parts[i + 1 :]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if rest and not (typing.get_origin(annotation) is dict and len(rest) == 1):
            return f"{name}: {'.'.join(parts[: i + 1])} is a value, not a section"
        return None
    return f"{name}: {'.'.join(parts)} is a section, not a value"


def channel_sections(settings: Settings) -> Iterator[str]:
    """Validate each configured channel's section with its own parser, secrets read, as
    ``switchboard run`` does at start (router/cli.py → adapters.build); yields the channels."""
    from adapters.discord_bot.config import parse_config as discord_config
    from adapters.email.config import parse_config as email_config
    from adapters.sandbox import SandboxConfig
    from adapters.telegram.config import parse_section as telegram_section

    checked = {"sandbox", "telegram", "discord", "email"}
    assert set(adapters.CHANNELS) == checked, "a channel was added or renamed: check its section here too"
    if settings.sandbox:
        SandboxConfig.model_validate(settings.sandbox)
    if settings.telegram:
        assert telegram_section(settings.telegram)
        yield "telegram"
    if settings.discord:
        discord_config(settings.discord).read_token()
        yield "discord"
    if settings.email:
        boxes = email_config(settings.email).mailboxes
        assert boxes
        for box in boxes:
            box.read_password()
        yield "email"


# -- Compose ---------------------------------------------------------------------------------------
def dockerfile_workdir() -> PurePosixPath:
    workdirs = [
        line.split()[1] for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("WORKDIR ")
    ]
    return PurePosixPath(workdirs[-1])


def compose_roles(path: Path) -> list[Role]:
    """The Switchboard services of a compose file (those built from deploy/Dockerfile)."""
    roles = []
    for name, service in yaml.safe_load(path.read_text(encoding="utf-8"))["services"].items():
        if "build" not in service:
            continue
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        argv = list(service["command"])
        environ = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        role = Role(name, argv, environ, container=service)
        # --config, else ./switchboard.toml in the image's working directory (router/config.py).
        config = parse_command(argv).config or DEFAULT_CONFIG
        target = dockerfile_workdir() / PurePosixPath(str(config))
        for volume in service.get("volumes") or []:
            source, _, rest = volume.partition(":")
            if PurePosixPath(rest.split(":")[0]) == target:
                role.config_text = (path.parent / source).read_text(encoding="utf-8")
        roles.append(role)
    return roles
