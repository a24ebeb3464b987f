"""docker-compose.yml, checked without a Docker engine: every service's command exists in
the project, every dependency waits on health, required variables fail loudly, the image
holds every package; and the README's compose quickstart names real variables, services,
commands and routes."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from core.providers import PROVIDERS, ProviderName
from core.settings import Settings
from llmqueue.cli import app as cli_app
from tests.quickstart import readme_block
from workers.queues import ALL_PROVIDER_QUEUES, ALL_QUEUES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
OWN = {name: s for name, s in SERVICES.items() if s.get("build") == "."}


def cli_command(name: str) -> Any:
    """The click command `llmqueue <name>` runs (typer builds on its own click)."""
    group: Any = typer.main.get_command(cli_app)
    sub = group.get_command(group.make_context("llmqueue", [name]), name)
    assert sub is not None, f"'llmqueue {name}': no such command"
    return sub


def test_the_services_the_brief_names_are_there() -> None:
    for name in ("postgres", "redis", "migrate", "api", "dispatcher", "flower"):
        assert name in SERVICES
    consumed = {
        s["command"][s["command"].index("--queues") + 1]
        for s in OWN.values()
        if s["command"][:2] == ["llmqueue", "worker"]
    }
    assert consumed == set(ALL_QUEUES) - {"provider.compatible"}


@pytest.mark.parametrize("name", sorted(OWN))
def test_every_llmqueue_command_exists_and_parses(name: str) -> None:
    command = OWN[name]["command"]
    if command[0] == "celery":
        app_path = command[command.index("--app") + 1]
        module, _, attr = app_path.partition(":")
        assert getattr(importlib.import_module(module), attr) is not None
        return
    assert command[0] == "llmqueue"
    words = [w for w in command[1:] if not w.startswith("-")]
    click_cmd = cli_command(words[0])
    args = command[2:]
    ctx = click_cmd.make_context("llmqueue", list(args), resilient_parsing=False)
    if "queues" in ctx.params:
        for queue in ctx.params["queues"].split(","):
            assert queue in ALL_QUEUES


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_wait_for_health(name: str) -> None:
    for dep, cond in (SERVICES[name].get("depends_on") or {}).items():
        assert dep in SERVICES
        wanted = cond["condition"]
        if dep == "migrate":
            assert wanted == "service_completed_successfully"
        else:
            assert wanted == "service_healthy"
            assert "healthcheck" in SERVICES[dep], f"{name} waits on {dep}, which has no healthcheck"


def test_required_variables_fail_loudly() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert re.search(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", text)
    assert re.search(r"\$\{LLMQUEUE_WEBHOOK_SECRET:\?[^}]+\}", text)
    assert not re.search(r"sk-[A-Za-z0-9]{10,}", text), "no secret in the compose file"


def test_each_provider_worker_gets_only_its_own_key() -> None:
    for queue in ALL_PROVIDER_QUEUES:
        provider = queue.split(".", 1)[1]
        service = SERVICES.get(f"worker-{provider}")
        if service is None:
            continue
        env = service.get("environment") or {}
        foreign = [
            k
            for k in env
            if k.endswith("_API_KEY")
            and provider.upper() not in k
            and not (provider == "azure" and k == "AZURE_OPENAI_API_KEY")
            and not (provider == "cohere" and k == "CO_API_KEY")
        ]
        assert not foreign, f"worker-{provider} is given {foreign}"


# ------------------------------------------------------------ credentials and the emulator


def credential_variables(provider: str) -> set[str]:
    """What a process needs in its environment to call `provider` (keys and endpoint)."""
    spec = PROVIDERS[ProviderName(provider)]
    names = {n for n in (spec.key_env, spec.endpoint_env) if n}
    if provider == "bedrock":  # the AWS credential chain: the key id is only its first link
        names |= {"AWS_SECRET_ACCESS_KEY", "AWS_REGION"}
    return names


ROUTED_PROVIDERS = [p.value for p in ProviderName if p is not ProviderName.COMPATIBLE]  # no variable


def resolved_environment(service: dict[str, Any], shell: dict[str, str]) -> dict[str, str]:
    """The service's environment as compose would give it with `shell` as the caller's
    environment: ${X:-default}, ${X:?message} (a placeholder value) and ${X} filled in."""

    def fill(match: re.Match[str]) -> str:
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        if op == ":?":
            return shell.get(name) or "required-and-set"
        return shell.get(name) or (default if op == ":-" else "")

    pattern = re.compile(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}")
    return {k: pattern.sub(fill, str(v)) for k, v in (service.get("environment") or {}).items()}


@pytest.mark.parametrize("name", ["api", "dispatcher"])
def test_the_services_that_route_get_every_providers_credentials(name: str) -> None:
    """Intake (the API) and the dispatcher keep only deployments with credentials (a job none
    can take is a 422): without every key they would refuse or misroute what workers can do."""
    env = SERVICES[name]["environment"]
    for provider in ROUTED_PROVIDERS:
        missing = credential_variables(provider) - set(env)
        assert not missing, f"{name} is not given {sorted(missing)} ({provider})"


@pytest.mark.parametrize("provider", ROUTED_PROVIDERS)
def test_each_provider_worker_gets_its_credentials(provider: str) -> None:
    env = SERVICES[f"worker-{provider}"].get("environment") or {}
    missing = credential_variables(provider) - set(env)
    assert not missing, f"worker-{provider} is not given {sorted(missing)}"


def test_the_routing_services_see_the_same_credentials_as_the_workers() -> None:
    """With OPENAI_API_KEY alone set, the API and the dispatcher count exactly the deployments
    worker-openai can call: what intake accepts is what a worker can do."""
    from routing.catalog import get_catalog
    from routing.credentials import unavailable

    shell = {"OPENAI_API_KEY": "sk-test", "POSTGRES_PASSWORD": "x"}
    catalog = get_catalog()
    openai = {n for n, d in catalog.deployments.items() if d.provider == "openai"}
    worker_env = resolved_environment(SERVICES["worker-openai"], shell)
    blocked_for_worker = unavailable(catalog, worker_env, emulator_url=None, emulator_mode="auto")
    assert not openai & set(blocked_for_worker)
    for name in ("api", "dispatcher"):
        env = resolved_environment(SERVICES[name], shell)
        settings = Settings(_env_file=None, **settings_fields(env))  # type: ignore[call-arg]
        blocked = unavailable(
            catalog, env, emulator_url=settings.emulator_url, emulator_mode=settings.emulator_mode
        )
        assert set(catalog.deployments) - set(blocked) == openai, name


def settings_fields(env: dict[str, str]) -> dict[str, str]:
    return {
        "emulator_url": env.get("LLMQUEUE_EMULATOR_URL", ""),
        "emulator_mode": env.get("LLMQUEUE_EMULATOR_MODE", "auto"),
    }


def test_the_emulator_is_opt_in() -> None:
    """Compose starts no emulator and points no service at one unless asked: a provider whose
    key is unset is skipped, never answered (and charged) by the emulator."""
    assert SERVICES["emulator"].get("profiles") == ["emulator"]
    for name, service in SERVICES.items():
        assert "emulator" not in (service.get("depends_on") or {}), f"{name} starts the emulator"
    for name, service in OWN.items():
        env = resolved_environment(service, {})
        settings = Settings(_env_file=None, **settings_fields(env))  # type: ignore[call-arg]
        assert settings.emulator_url is None, name
    # Asked for (COMPOSE_PROFILES=emulator and the URL), it answers for keyless providers.
    env = resolved_environment(SERVICES["worker-openai"], {"LLMQUEUE_EMULATOR_URL": "http://emulator:8765"})
    settings = Settings(_env_file=None, **settings_fields(env))  # type: ignore[call-arg]
    assert settings.emulator_url == "http://emulator:8765" and settings.emulator_mode == "auto"


def test_a_bare_worker_without_keys_does_not_fall_back_to_the_emulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`llmqueue worker` with no key and no LLMQUEUE_EMULATOR_URL: every deployment that needs
    a key is unavailable (skipped, named with what to set), none is emulated."""
    from routing.catalog import get_catalog
    from routing.credentials import emulated, resolve, unavailable

    for name in ("LLMQUEUE_EMULATOR_URL", "LLMQUEUE_EMULATOR_MODE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.emulator_url is None
    catalog = get_catalog()
    blocked = unavailable(
        catalog, {}, emulator_url=settings.emulator_url, emulator_mode=settings.emulator_mode
    )
    assert set(blocked) == set(catalog.deployments)
    for deployment in catalog.deployments.values():
        problem = resolve(deployment, {}).problem
        assert not emulated(problem, emulator_url=settings.emulator_url, emulator_mode=settings.emulator_mode)


def test_workers_are_named_after_their_queues_unless_named() -> None:
    from llmqueue.cli import node_name

    assert node_name(["dispatch"]) == "dispatch@%h"
    assert node_name(["provider.openai"]) == "openai@%h"
    assert node_name(["dispatch", "provider.openai"]) == "dispatch-openai@%h"
    assert node_name(list(ALL_QUEUES)) == "all@%h"
    worker_services = [s for s in OWN.values() if s["command"][:2] == ["llmqueue", "worker"]]
    names = {node_name(s["command"][s["command"].index("--queues") + 1].split(",")) for s in worker_services}
    assert len(names) == len(worker_services)  # Flower lists every compose worker apart


def test_flower_requires_basic_auth_from_the_environment() -> None:
    flower = SERVICES["flower"]
    auth = flower["environment"]["FLOWER_BASIC_AUTH"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", auth)
    assert "FLOWER_UNAUTHENTICATED_API" not in flower["environment"]


# ------------------------------------------------------------ the README's compose quickstart
# Docker cannot run here, so each command of the block is checked against what it names: the
# variables compose reads, the services, the llmqueue commands they run, the API route.


def quickstart_commands() -> list[str]:
    text = readme_block("compose").replace("\\\n", " ")
    return [line for line in (ln.split("  #")[0].strip() for ln in text.splitlines()) if line]


def parse_llmqueue(args: list[str]) -> Any:
    """Parse `llmqueue <args>` as the CLI would (a bad option or command raises), without running it."""
    command: Any = typer.main.get_command(cli_app)
    name = "llmqueue"
    while hasattr(command, "list_commands"):  # a group: the next word names the subcommand
        name, *args = args
        sub = command.get_command(command.make_context("llmqueue", [name], resilient_parsing=True), name)
        assert sub is not None, f"'llmqueue ... {name}': no such command"
        command = sub
    return command.make_context(name, list(args))


def test_the_dockerfile_copies_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert f"COPY {package} {package}" in text, f"the image would lack {package}/"


def test_compose_quickstart_sets_what_compose_needs() -> None:
    exported: dict[str, str] = {}
    for line in quickstart_commands():
        if line.startswith("export "):
            for word in shlex.split(line)[1:]:
                name, _, value = word.partition("=")
                exported[name] = value
    assert "POSTGRES_PASSWORD" in exported  # compose refuses to start without it
    passed = {name for service in SERVICES.values() for name in service.get("environment") or {}}
    keys = [name for name in exported if name.endswith("_API_KEY") and name != "LLMQUEUE_API_KEY"]
    assert keys and all(name in passed for name in keys), f"compose passes none of {keys} on"
    # Every variable compose requires (${X:?...}) is exported; no emulator is asked for.
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required <= set(exported), f"the quickstart leaves {sorted(required - set(exported))} unset"
    assert "LLMQUEUE_EMULATOR_URL" not in exported and "COMPOSE_PROFILES" not in exported


def test_compose_quickstart_commands_exist() -> None:
    commands = quickstart_commands()
    up = next(shlex.split(c) for c in commands if c.startswith("docker compose up"))
    assert set(up[3:]) <= {"-d", "--detach", "--build"}
    inner = next(m.group(1) for c in commands if (m := re.search(r"\$\((docker compose exec .*)\)", c)))
    words = shlex.split(inner)
    flags = [w for w in words[3:] if w.startswith("-") and words.index(w) < words.index("llmqueue")]
    service = words[3 + len(flags)]
    assert service in OWN and set(flags) <= {"-T"}
    assert words[4 + len(flags)] == "llmqueue"
    parse_llmqueue(words[5 + len(flags) :])


def test_compose_quickstart_request_is_one_the_api_takes() -> None:
    from api.main import create_app
    from api.schemas.jobs import JobCreate

    curl = shlex.split(next(c for c in quickstart_commands() if c.startswith("curl ")))
    url = urlsplit(next(w for w in curl if w.startswith("http")))
    assert f"{url.port}:8000" in SERVICES["api"]["ports"]  # the port compose publishes
    posted = json.loads(curl[curl.index("-d") + 1])
    assert "post" in create_app().openapi()["paths"][url.path]  # a route the API serves
    JobCreate.model_validate(posted)
    headers = [curl[i + 1] for i, w in enumerate(curl) if w == "-H"]
    assert "Authorization: Bearer $LLMQUEUE_API_KEY" in headers
