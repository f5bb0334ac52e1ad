"""The production image and compose file, checked without a Docker engine.

This machine has no Docker engine, so nothing here builds or starts a container. What can be
known from the files is checked: the compose file parses, every command it runs exists in this
project (a management command, a console script of a runtime dependency, an importable module),
each portal process gets the environment production mode demands (proved by importing the
settings with exactly that environment), no secret is written into a file, and the final image
stage runs as a non-root user without compilers.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import sys
import tomllib
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from celery.bin.celery import celery as celery_cli
from django.core.management import get_commands
from django.urls import resolve

from tests.processes import python_code_run

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PORTAL_IMAGE = "ward-portal"
CORE_SERVICES = {"mariadb", "redis", "migrate", "web", "ingest", "worker", "beat"}
DEMO_SERVICES = {"load-demo", "simulator"}
# What config/settings.py's production refusal demands (DEBUG off is checked on its own).
PRODUCTION_REQUIRES = {"SECRET_KEY_FILE", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"}
BUILD_TOOLS = ("gcc", "g++", "cc ", "build-essential", "libmariadb-dev", "pkg-config", "clang")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY\b")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yml").read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def portal_services() -> list[str]:
    return sorted(n for n, s in services().items() if s["image"].startswith(f"{PORTAL_IMAGE}:"))


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines())
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2) if k[:1] != "#"}


def service_environment(name: str) -> dict[str, str]:
    """What the container gets: env_file first, then `environment`, which wins (as in compose).

    The real docker/portal.env is git-ignored; its committed example stands in for it.
    """
    service = services()[name]
    environment: dict[str, str] = {}
    env_files = service.get("env_file", [])
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        environment |= _env_file(DOCKER / f"{env_file}.example")
    return environment | {k: str(v) for k, v in (service.get("environment") or {}).items()}


@cache
def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per stage, continuation lines joined, comments dropped."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = [[]]
    for instruction in re.split(r"(?<!\\)\n", "\n".join(lines)):
        instruction = re.sub(r"\\\n\s*", " ", instruction).strip()
        if not instruction:
            continue
        keyword, _, arguments = instruction.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def named_stage(alias: str) -> list[tuple[str, str]]:
    return next(s for s in dockerfile_stages()[1:] if s[0][1].endswith(f" AS {alias}"))


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def global_argument(text: str) -> str:
    """`${NAME}` resolved to the default of a global ARG (before the first FROM)."""
    defaults = dict(a.split("=", 1) for k, a in dockerfile_stages()[0] if k == "ARG")
    return defaults.get(text.removeprefix("${").removesuffix("}"), text)


def builder_image() -> str:
    return global_argument(named_stage("builder")[0][1].split()[0])


def _json_command(arguments: str) -> list[str]:
    return json.loads(arguments[arguments.index("[") :])


def _runtime_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {re.split(r"[\[=<>~! ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}


def _defines(module: str, name: str) -> bool:
    """Whether the module's source binds the name at top level (read, not imported)."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # its package is missing
        spec = None
    assert spec is not None and spec.origin, f"no module {module}"
    names: set[str] = set()
    for node in ast.parse(Path(spec.origin).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return name in names


def assert_runnable(command: list[str]) -> None:
    """The program exists in the image's environment and so does what it is asked to run."""
    program = command[0]
    if program == "python":
        assert command[1] == "manage.py", command
        assert command[2] in get_commands(), f"no management command {command[2]!r}"
        return
    scripts = entry_points(group="console_scripts", name=program)
    assert scripts, f"{program} is not a console script of this environment"
    distribution = next(iter(scripts)).dist
    assert distribution is not None
    # Only [project] dependencies reach the image (uv sync --no-default-groups).
    assert distribution.name.lower() in _runtime_distributions(), f"{program} is dev-only"
    assert (Path(sys.executable).parent / program).is_file()
    if program == "celery":
        app = command[command.index("-A") + 1]
        assert _defines(f"{app}.celery", "app"), f"{app}.celery defines no Celery app"
        subcommand = next(a for a in command[command.index("-A") + 2 :] if a[:1] != "-")
        assert subcommand in celery_cli.commands, f"celery has no {subcommand!r} command"
    elif program in ("daphne", "uvicorn"):
        module, _, attribute = command[-1].partition(":")
        assert _defines(module, attribute), f"{command[-1]} does not exist"
    else:
        pytest.fail(f"no rule to check {program}")


def _daphne_endpoint(command: list[str]) -> dict[str, str]:
    """The options of daphne's ``-e tcp:port=…:interface=…:backlog=…`` endpoint."""
    kind, *options = command[command.index("-e") + 1].split(":")
    assert kind == "tcp"
    return dict(option.split("=", 1) for option in options)


def test_it_parses_the_compose_file_with_every_service() -> None:
    assert "version" not in compose()
    assert set(services()) == CORE_SERVICES | DEMO_SERVICES
    for name in CORE_SERVICES:
        assert "profiles" not in services()[name], f"{name} must start by default"
    for name in DEMO_SERVICES:
        assert services()[name]["profiles"] == ["simulator"]


@pytest.mark.parametrize("name", portal_services())
def test_it_runs_only_commands_that_exist(name: str) -> None:
    service = services()[name]
    assert_runnable(service["command"])
    test = service.get("healthcheck", {}).get("test")
    if test and test[0] == "CMD-SHELL":
        assert_runnable(shlex.split(test[1].split(">")[0]))


def test_it_runs_the_image_default_command_and_serves_what_compose_expects() -> None:
    instructions = dict(final_stage())
    command = _json_command(instructions["CMD"])
    assert_runnable(command)
    assert command == services()["web"]["command"]
    endpoint = _daphne_endpoint(command)
    assert endpoint["port"] == instructions["EXPOSE"] == "8000"
    # Every interface of the container; compose publishes it on 127.0.0.1 only.
    assert endpoint["interface"] == "0.0.0.0"  # noqa: S104
    # A reconnect storm of a thousand dashboards overflows Twisted's default of 50.
    assert int(endpoint["backlog"]) >= 1024
    assert services()["web"]["ports"] == ["127.0.0.1:8000:8000"]
    probe = _json_command(instructions["HEALTHCHECK"])
    assert probe[:2] == ["python", "-c"], "the probe needs no curl in the image"
    assert "'http://127.0.0.1:8000/healthz'" in probe[2]
    assert resolve("/healthz").url_name == "healthz"


@pytest.mark.parametrize("name", portal_services())
def test_it_gives_each_portal_process_the_settings_it_needs(name: str, tmp_path: Path) -> None:
    environment = service_environment(name)
    demo = name in DEMO_SERVICES
    # Both demo commands refuse production mode; every other process runs in it.
    assert environment["PORTAL_MODE"] == ("development" if demo else "production")
    assert environment["DEBUG"] == "false"
    assert PRODUCTION_REQUIRES <= environment.keys()
    assert services()[name]["env_file"] == "portal.env"
    assert "portal_secret_key" in services()[name]["secrets"]

    # The proof: the settings load, in a fresh interpreter, from exactly this environment.
    key_file = tmp_path / "portal_secret_key"
    key_file.write_text("k" * 64 + "\n", encoding="utf-8")
    environment |= {"SECRET_KEY_FILE": str(key_file), "DJANGO_SETTINGS_MODULE": "config.settings"}
    environment["PATH"] = os.environ["PATH"]
    code = (
        "import environ; environ.Env.read_env = lambda *a, **k: None\n"  # no local .env helps
        "import django; django.setup()\n"
        "from django.conf import settings as s; print(s.PORTAL_MODE, s.DEBUG)"
    )
    result = python_code_run(code, environment=environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == [environment["PORTAL_MODE"], "False"]


def test_it_keeps_secrets_out_of_the_compose_file() -> None:
    defined = compose()["secrets"]
    for secret in defined.values():
        assert secret["file"].startswith("./secrets/"), secret
    for name, service in services().items():
        environment = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        assert "SECRET_KEY" not in environment, name
        for key, value in environment.items():
            assert urlsplit(value).password is None, f"{name}: {key} holds a password"
            if SECRET_NAME.search(key):
                assert key.endswith("_FILE"), f"{name}: {key} must come from a file"
                assert value.startswith("/run/secrets/"), f"{name}: {key}={value}"
                secret = value.removeprefix("/run/secrets/")
                assert secret in service["secrets"] and secret in defined, f"{name}: {secret}"


def test_it_pins_every_image() -> None:
    for name, service in services().items():
        image, _, tag = service["image"].partition(":")
        if image == PORTAL_IMAGE:
            assert service["pull_policy"] == "never", "the portal image is built, never pulled"
        else:
            assert re.fullmatch(r"\d+(\.\d+)*", tag), f"{name}: {service['image']} is not pinned"
    for instructions in dockerfile_stages()[1:]:
        image = global_argument(instructions[0][1].split()[0])
        assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)*(-[\w.-]+)?", image), f"{image} is not pinned"


def test_it_starts_services_in_order() -> None:
    s = services()
    assert s["mariadb"]["healthcheck"]["test"] == [
        "CMD",
        "healthcheck.sh",
        "--connect",
        "--innodb_initialized",
    ]
    assert "--character-set-server=utf8mb4" in s["mariadb"]["command"]
    assert s["mariadb"]["environment"]["MARIADB_PASSWORD_FILE"].startswith("/run/secrets/")
    assert s["mariadb"]["environment"]["MARIADB_ROOT_PASSWORD_FILE"].startswith("/run/secrets/")
    assert s["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert s["migrate"]["restart"] == "no"
    assert s["migrate"]["depends_on"]["mariadb"]["condition"] == "service_healthy"
    for name in ("web", "ingest", "worker", "beat"):
        assert s[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert s[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert s["simulator"]["depends_on"]["load-demo"]["condition"] == (
        "service_completed_successfully"
    )
    assert s["simulator"]["command"][-2:] == ["--url", "http://ingest:8001"]
    assert s["simulator"]["depends_on"]["ingest"]["condition"] == "service_healthy"


def test_it_serves_devices_on_a_listener_of_their_own() -> None:
    ingest = services()["ingest"]
    command = ingest["command"]
    assert command[0] == "uvicorn"
    assert command[-1] == "config.asgi:ingest_application"
    # Our application answers no lifespan messages, and uvicorn must know it.
    assert "--lifespan=off" in command and "--host=0.0.0.0" in command
    [port] = [a.removeprefix("--port=") for a in command if a.startswith("--port=")]
    assert port != _daphne_endpoint(services()["web"]["command"])["port"]
    assert ingest["ports"] == [f"127.0.0.1:{port}:{port}"]
    # The image's probe (written for web's port), on this listener's port.
    image_probe = _json_command(dict(final_stage())["HEALTHCHECK"])
    assert "'http://127.0.0.1:8000/healthz'" in image_probe[2]
    assert ingest["healthcheck"]["test"] == [
        "CMD",
        *image_probe[:2],
        image_probe[2].replace(":8000/", f":{port}/"),
    ]


def test_it_runs_the_final_image_as_a_non_root_user_without_compilers() -> None:
    runtime = final_stage()
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users, "the final stage must name a USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    for keyword, arguments in runtime:
        if keyword == "RUN":
            assert not any(tool in arguments for tool in BUILD_TOOLS), arguments
    # The virtual environment is copied from the builder: same interpreter, same paths.
    assert global_argument(runtime[0][1].split()[0]) == builder_image()


def test_it_bakes_no_secret_or_setting_into_the_image() -> None:
    for instructions in dockerfile_stages():
        for keyword, arguments in instructions:
            if keyword in {"ENV", "ARG"}:
                for name in ("SECRET_KEY", "PASSWORD", "DATABASE_URL", "REDIS_URL", "HOSTS"):
                    assert name not in arguments, f"{keyword} {arguments}"
    collect = [a for k, a in named_stage("builder") if k == "RUN" and "collectstatic" in a]
    assert len(collect) == 1
    # Production settings check the static files; the values exist on that RUN line only.
    assert "PORTAL_MODE=production" in collect[0]
    assert "SECRET_KEY=build-only-" in collect[0]


def test_it_builds_the_same_environment_and_browser_libraries_as_bin_setup() -> None:
    setup = (ROOT / "bin" / "setup").read_text(encoding="utf-8")
    dockerfile = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    uv_version = re.search(r"^UV_VERSION=(\S+)$", setup, re.MULTILINE)
    assert uv_version and f"ARG UV_VERSION={uv_version[1]}" in dockerfile
    assert re.search(r"uv sync --frozen --no-dev --no-default-groups\b", dockerfile)
    vendored = re.search(r"for file in ([^;]+); do\n\s+cmp -s \"node_modules/uplot", setup)
    assert vendored, "bin/setup's uPlot copy loop moved; update this test and the Dockerfile"
    for file in vendored[1].split():
        assert f"/build/node_modules/uplot/dist/{file}" in dockerfile
    assert "npm ci" in dockerfile
    assert "COPY package.json package-lock.json ./" in dockerfile


def test_it_ignores_local_state_in_the_build_context() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignored = {line.strip().strip("/") for line in lines if line.strip()[:1] not in {"", "#"}}
    required = {".venv", ".git", "node_modules", "var", ".env", "docker/secrets"}
    required |= {"docker/portal.env", "static/vendor", "staticfiles"}
    assert required <= ignored, required - ignored


def test_it_keeps_the_secret_files_out_of_git() -> None:
    lines = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    ignored = {line.strip().strip("/") for line in lines}
    assert {"docker/secrets", "docker/portal.env"} <= ignored, "add them to .gitignore"
