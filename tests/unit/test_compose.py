"""Static checks of docker-compose.yml, the Dockerfile and deploy/prometheus.yml.

Nothing here starts a container: the files are parsed and cross-checked against
each other and against :class:`streamapp.settings.Settings`.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from streamapp.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_SERVICES = {"kafka", "postgres", "mailpit", "migrate", "topics", "worker"}
OPTIONAL_SERVICES = {"kafka-ui": "ui", "prometheus": "monitoring"}
APP_SERVICES = ("worker", "migrate", "topics")
PACKAGES = ("streamapp", "agents", "schemas", "templates")


def _load_yaml(relative: str) -> dict:
    return yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services() -> dict:
    return _load_yaml("docker-compose.yml")["services"]


def _env(service: dict) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def _setting_env_names() -> set[str]:
    """Environment names Settings reads: its aliases if a field has any, else prefix + name."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}; an empty host stays ''."""
    result = {}
    for entry in value.split(","):
        name, address = entry.strip().split("://", 1)
        host, port = address.rsplit(":", 1)
        result[name] = (host, int(port))
    return result


def _names(value: str) -> set[str]:
    return {part.strip() for part in value.split(",") if part.strip()}


def test_required_services_exist_without_profiles(services):
    assert REQUIRED_SERVICES <= services.keys()
    for name in REQUIRED_SERVICES:
        assert not services[name].get("profiles"), f"{name} must start with a plain `docker compose up`"


def test_optional_services_only_under_their_profiles(services):
    for name, profile in OPTIONAL_SERVICES.items():
        assert services[name].get("profiles") == [profile]


def test_app_services_share_one_environment(services):
    envs = [_env(services[name]) for name in APP_SERVICES]
    assert envs[0] and envs[0] == envs[1] == envs[2]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_names_are_settings(services, name):
    accepted = _setting_env_names()
    unknown = set(_env(services[name])) - accepted
    assert not unknown, f"{name} sets variables Settings never reads: {sorted(unknown)}"


def test_secret_key_comes_from_host_environment(services):
    assert _env(services["worker"])["STREAMAPP_SECRET_KEY"].startswith("${STREAMAPP_SECRET_KEY")


def test_worker_listens_on_published_port(services):
    env = _env(services["worker"])
    assert env["STREAMAPP_WEB_HOST"] == "0.0.0.0"
    assert f"{env['STREAMAPP_WEB_PORT']}:{env['STREAMAPP_WEB_PORT']}" in services["worker"]["ports"]


def test_bootstrap_servers_point_at_internal_kafka_listener(services):
    host, port = _env(services["worker"])["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    kafka_env = _env(services["kafka"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    assert host == "kafka" and host in services
    matches = [name for name, address in advertised.items() if address == (host, int(port))]
    assert matches == [kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert ("localhost", 9094) in advertised.values()
    assert "9094:9094" in services["kafka"]["ports"]


def test_database_url_matches_postgres_service(services):
    url = urlsplit(_env(services["worker"])["DATABASE_URL"])
    pg_env = _env(services["postgres"])
    assert url.scheme.startswith("postgresql")
    assert url.hostname == "postgres" and url.hostname in services
    assert url.port == 5432
    assert url.username == pg_env["POSTGRES_USER"]
    assert url.password == pg_env["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == pg_env["POSTGRES_DB"]


def test_kafka_kraft_settings_are_coherent(services):
    env = _env(services["kafka"])
    assert {"broker", "controller"} <= _names(env["KAFKA_PROCESS_ROLES"])
    listeners = _listeners(env["KAFKA_LISTENERS"])
    protocol_map = dict(item.split(":", 1) for item in _names(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]))
    controller_names = _names(env["KAFKA_CONTROLLER_LISTENER_NAMES"])
    assert controller_names and controller_names <= listeners.keys() <= protocol_map.keys()
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    node_id, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@", 1)
    assert node_id == env["KAFKA_NODE_ID"]
    voter_host, voter_port = voter.rsplit(":", 1)
    assert voter_host == services["kafka"].get("hostname", "kafka")
    assert int(voter_port) in {listeners[name][1] for name in controller_names}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"


def test_kafka_single_node_replication(services):
    env = _env(services["kafka"])
    for name in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[name] == "1", name
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"


@pytest.mark.parametrize(
    ("dependency", "condition"),
    [
        ("migrate", "service_completed_successfully"),
        ("topics", "service_completed_successfully"),
        ("kafka", "service_healthy"),
        ("postgres", "service_healthy"),
        ("mailpit", "service_started"),
    ],
)
def test_worker_dependencies(services, dependency, condition):
    assert services["worker"]["depends_on"][dependency]["condition"] == condition


def test_one_shot_services_wait_for_their_backend(services):
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_worker(services):
    config = _load_yaml("deploy/prometheus.yml")
    (job,) = config["scrape_configs"]
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    host, port = target.split(":")
    assert host == "worker" and host in services
    assert port == _env(services["worker"])["STREAMAPP_WEB_PORT"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def test_dockerfile_copies_every_package():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    sources = {
        source.rstrip("/")
        for line in re.findall(r"^COPY\s+(.+)$", text, flags=re.MULTILINE)
        for source in line.split()[:-1]
        if not source.startswith("--")
    }
    assert {"pyproject.toml", *PACKAGES} <= sources
