"""deploy/ and .env.example, checked as far as this machine allows (no Docker daemon, no
systemd as PID 1): they must agree with the settings the code reads (`bot.core.config.Settings`),
and the Redis configuration and the health check run for real against a redis-server.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib

import pytest
import redis
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from paths import REPO
from subprocess_env import SETTING_NAMES, clean_env

from bot.core.config import Settings
from bot.core.local_redis import free_port

DEPLOY = REPO / "deploy"
SECRET_NAMES = {name.upper() for name, field in Settings.model_fields.items()
                if "SecretStr" in str(field.annotation)}
APP_SERVICES = {"bot": ("bot", "run"), "trainer": ("trainer", "run")}
ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
DEFAULTED = re.compile(r"^\$\{([A-Z0-9_]+):-(.*)\}$")


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    """NAME -> value of each assignment in .env.example (comments and blank lines skipped)."""
    values = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = ENV_LINE.match(line)
        if match:
            assert match.group(1) not in values, f"{match.group(1)} twice in .env.example"
            values[match.group(1)] = match.group(2)
    return values


# --- .env.example ---------------------------------------------------------------------------

def test_env_example_names_exactly_the_settings():
    names = set(env_example())
    assert not SETTING_NAMES - names, f"missing from .env.example: {SETTING_NAMES - names}"
    assert not names - SETTING_NAMES, f"not settings of bot/core/config.py: {names - SETTING_NAMES}"


def test_env_example_documents_each_setting_and_leaves_secrets_blank():
    lines = (REPO / ".env.example").read_text().splitlines()
    for number, line in enumerate(lines):
        match = ENV_LINE.match(line)
        if match:
            assert number > 0 and lines[number - 1].startswith("# "), \
                f"{match.group(1)} has no comment line above it"
    values = env_example()
    assert SECRET_NAMES, "Settings has no SecretStr field any more: revisit this test"
    for name in SECRET_NAMES:
        assert values[name] == "", f"{name} must be blank in .env.example"


def test_env_example_values_are_the_code_defaults(monkeypatch):
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    from_example = Settings(_env_file=REPO / ".env.example")
    defaults = Settings(_env_file=None)
    assert from_example.model_dump() == defaults.model_dump()


# --- docker-compose.yml ---------------------------------------------------------------------

@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_compose_app_services_name_every_setting(service):
    spec = compose()["services"][service]
    names = set(spec["environment"])
    assert not SETTING_NAMES - names, f"{service} does not name {SETTING_NAMES - names}"
    assert not names - SETTING_NAMES, f"{service} names non-settings {names - SETTING_NAMES}"
    assert spec["env_file"] == ".env"


def test_compose_defaults_match_env_example():
    example = env_example()
    environment = compose()["services"]["bot"]["environment"]
    fixed = set()
    for name, value in environment.items():
        match = DEFAULTED.match(str(value))
        if not match:
            fixed.add(name)
            continue
        assert match.group(1) == name, f"{name} takes its value from {match.group(1)}"
        assert match.group(2) == example[name], \
            f"{name}: compose default {match.group(2)!r}, .env.example {example[name]!r}"
    # Set by the deployment itself (the redis service, the reports volume, the port Prometheus
    # scrapes) or required secrets.
    assert fixed == {"REDIS_URL", "REPORTS_DIR", "METRICS_PORT"} | SECRET_NAMES


def test_compose_secrets_are_required_and_the_trainer_has_no_token():
    services = compose()["services"]
    for name in SECRET_NAMES:
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", services["bot"]["environment"][name])
    assert services["trainer"]["environment"]["DISCORD_TOKEN"] == ""
    assert "${REDIS_PASSWORD:?" in services["bot"]["environment"]["REDIS_URL"]


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_compose_app_services_run_on_a_gpu_after_redis(service):
    spec = compose()["services"][service]
    assert spec["command"] == ["python", "-m", *APP_SERVICES[service]]
    assert spec["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert spec["restart"] in ("unless-stopped", "always", "on-failure")
    assert spec["depends_on"]["redis"]["condition"] == "service_healthy"
    devices = spec["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    check = spec["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "/opt/learning-bot/healthcheck.py"]
    # The bot's check also asks for its Discord connection; the trainer has none.
    assert check[3:] == (["--discord"] if service == "bot" else [])
    assert "COPY deploy/healthcheck.py /opt/learning-bot/healthcheck.py" in dockerfile()


def test_compose_redis_uses_the_config_with_a_volume_and_a_health_check():
    spec = compose()["services"]["redis"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in spec["volumes"]}
    config_path = mounts["./redis.conf"]
    script = spec["command"][-1]
    assert f"redis-server {config_path} -" in script
    # Only `$$` (a literal `$` for the container's shell): a bare `$` would make compose paste
    # the password into the container's command line, visible in `docker inspect`.
    assert "$" not in script.replace("$$", ""), script
    assert mounts.get("redis-data") == "/data" and "redis-data" in compose()["volumes"]
    assert "redis-cli ping" in spec["healthcheck"]["test"][-1]
    assert spec["restart"] in ("unless-stopped", "always")
    assert "ports" not in spec, "Redis must not be published on the host"


# --- redis.conf -----------------------------------------------------------------------------

def redis_directives() -> dict[str, str]:
    directives = {}
    for line in (DEPLOY / "redis.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            directives[key] = value
    return directives


def test_redis_conf_is_durable_and_never_evicts():
    directives = redis_directives()
    assert directives["appendonly"] == "yes"
    assert directives["appendfsync"] == "everysec"
    assert directives["maxmemory-policy"] == "noeviction"
    assert "requirepass" in directives


@pytest.fixture
def compose_redis(tmp_path):
    """Run the compose file's redis command (as compose would: `$$` is a literal `$`) with
    deploy/redis.conf, on a free port in a temp dir; yields (port, password, data dir)."""
    real = shutil.which("redis-server")
    assert real, "redis-server is needed (make test installs it)"
    port, password, data = free_port(), "pw-" + os.urandom(8).hex(), tmp_path / "data"
    data.mkdir()
    # The one change from the container: this host's port and directory, placed before the
    # trailing `-` (redis-server reads standard input only for a last `-`).
    shim = tmp_path / "bin" / "redis-server"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nconf="$1"; shift\nexec {real} "$conf" --port {port} '
                    f'--bind 127.0.0.1 --dir {data} "$@"\n')
    shim.chmod(0o755)
    spec = compose()["services"]["redis"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in spec["volumes"]}
    script = spec["command"][-1].replace("$$", "$").replace(
        mounts["./redis.conf"], str(DEPLOY / "redis.conf"))
    env = {**clean_env(), "PATH": f"{shim.parent}:{os.environ['PATH']}",
           "REDIS_PASSWORD": password}
    process = subprocess.Popen(spec["command"][:-1] + [script], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not open its port"
            time.sleep(0.05)
    yield port, password, data
    process.terminate()
    process.wait(timeout=10)


def test_compose_redis_command_sets_the_password_and_keeps_an_aof(compose_redis):
    port, password, data = compose_redis
    with redis.Redis(port=port) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with redis.Redis(port=port, password=password, decode_responses=True) as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("requirepass") == {"requirepass": password}
        client.set("probe", "written")
    assert (data / "appendonlydir").is_dir()


# --- deploy/healthcheck.py ------------------------------------------------------------------

def run_healthcheck(tmp_path, **settings) -> subprocess.CompletedProcess:
    env = {**clean_env(), **{k.upper(): v for k, v in settings.items()}}
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_healthcheck_passes_with_the_password_and_fails_without_leaking_it(compose_redis,
                                                                           tmp_path):
    port, password, _ = compose_redis
    ok = run_healthcheck(tmp_path, redis_url=f"redis://:{password}@127.0.0.1:{port}/0",
                         key_prefix="health")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("healthy")
    wrong = "wrong-" + password
    bad = run_healthcheck(tmp_path, redis_url=f"redis://:{wrong}@127.0.0.1:{port}/0")
    assert bad.returncode == 1 and bad.stdout.startswith("unhealthy: Redis")
    assert wrong not in bad.stdout + bad.stderr and "Traceback" not in bad.stderr


def test_healthcheck_names_a_bad_setting(tmp_path):
    result = run_healthcheck(tmp_path, max_new_tokens="0")
    assert result.returncode == 1
    assert "MAX_NEW_TOKENS" in result.stdout and "Traceback" not in result.stderr


# --- systemd units --------------------------------------------------------------------------

def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / name).read_text())
    return parser


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_systemd_unit_restarts_on_failure_with_the_env_file(service):
    parsed = unit(f"{service}.service")["Service"]
    assert parsed["Restart"] == "on-failure"
    assert parsed["EnvironmentFile"] == "/etc/learning-bot/env"
    assert parsed["User"] not in ("", "root")
    assert parsed["WorkingDirectory"].startswith("/")
    python, *args = parsed["ExecStart"].split()
    assert re.fullmatch(r"/\S+/bin/python3?", python), "ExecStart must use the venv's python"
    assert args == ["-m", *APP_SERVICES[service]]


def test_systemd_trainer_does_not_keep_the_discord_token():
    assert unit("trainer.service")["Service"]["UnsetEnvironment"] == "DISCORD_TOKEN"


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_systemd_accepts_the_unit(service, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the configparser checks still ran")
    # The venv interpreter exists only on the target host: point at this one to verify the rest.
    text = (DEPLOY / f"{service}.service").read_text()
    venv_python = unit(f"{service}.service")["Service"]["ExecStart"].split()[0]
    path = tmp_path / f"{service}.service"
    path.write_text(text.replace(venv_python, sys.executable))
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                            timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if str(path) in line or path.name in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


# --- Dockerfile -----------------------------------------------------------------------------

def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile())
    result = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest))
    return result


def test_dockerfile_pins_a_cuda_torch_that_pyproject_admits():
    pins = re.findall(r"\btorch==(\S+)", dockerfile())
    assert pins == ["2.13.0"], pins
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch_req = next(r for r in project["dependencies"] if re.match(r"torch\b", r))
    spec = SpecifierSet(torch_req.removeprefix("torch"))
    # The CUDA index names its builds with a local label (2.13.0+cu128): both must be admitted.
    assert spec.contains(Version(pins[0])) and spec.contains(Version(pins[0] + "+cu128"))
    torch_run = next(args for kw, args in instructions() if kw == "RUN" and "torch==" in args)
    assert "--index-url" in torch_run and "download.pytorch.org/whl/${TORCH_CUDA}" in torch_run
    assert re.search(r"ARG TORCH_CUDA=cu\d+", dockerfile())


def test_dockerfile_base_python_order_and_user():
    steps = instructions()
    base = next(args for kw, args in steps if kw == "ARG" and args.startswith("CUDA_IMAGE="))
    assert re.fullmatch(r"CUDA_IMAGE=nvidia/cuda:12\.\d+(\.\d+)?-runtime-ubuntu\S+", base)
    assert "python3.11" in dockerfile()
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains("3.11")
    runs = [args for kw, args in steps if kw == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "torch==" in r)
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch_at < project_at, "torch must be installed before the project"
    users = [args for kw, args in steps if kw == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (kw, _) in enumerate(steps) if kw == "USER")
    assert all(kw != "RUN" for kw, _ in steps[last_user:])


def test_dockerfile_copies_what_exists_and_bakes_in_no_setting():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    copied = []
    for keyword, args in instructions():
        if keyword == "COPY":
            copied += args.split()[:-1]
        if keyword in ("ENV", "ARG"):
            named = set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", args))
            assert not named & SETTING_NAMES, f"settings belong in the run-time env: {named}"
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such path"
    assert pyproject["readme"] in copied
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ".env" in ignored and "**/.env" in ignored


# --- the fleet profile (inference workers on Ray Serve) ----------------------------------------

def test_compose_fleet_profile_runs_the_workers_on_gpus_and_the_bot_as_a_ray_front_end():
    services = compose()["services"]
    head, worker, front = (services[n] for n in ("ray-head", "ray-worker", "bot-fleet"))
    for spec in (head, worker, front):
        assert spec["profiles"] == ["fleet"] and spec["env_file"] == ".env"
        assert set(spec["environment"]) == SETTING_NAMES
    assert "ray start --head --port=6380" in head["command"][-1]
    assert head["command"][-1].endswith("exec python -m bot worker")
    assert head["environment"]["RAY_ADDRESS"] == "auto" and head["deploy"] == {}
    assert head["environment"]["WORKER_NUM_GPUS"] == "1"
    assert worker["command"][:3] == ["ray", "start", "--address=ray-head:6380"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    assert "--address=ray-head:6380" in front["command"][-1]
    assert front["command"][-1].endswith("exec python -m bot run")
    assert front["environment"]["GENERATOR"] == "ray" and front["deploy"] == {}
    # The default stack stays one bot with the engine inside.
    assert "profiles" not in services["bot"]
    assert services["bot"]["environment"]["GENERATOR"] == "${GENERATOR:-local}"


@pytest.mark.parametrize("name", ["ray-head", "ray-worker", "bot-worker"])
def test_systemd_fleet_units_use_the_env_file(name):
    parsed = unit(f"{name}.service")["Service"]
    assert parsed["EnvironmentFile"] == "/etc/learning-bot/env"
    assert parsed["Restart"] == "on-failure" and parsed["User"] not in ("", "root")
    program, *args = parsed["ExecStart"].split()
    assert program.startswith("/opt/learning-bot/venv/bin/")
    if name == "bot-worker":
        assert args == ["-m", "bot", "worker"]
    else:
        assert args[0] == "start" and "--block" in args
