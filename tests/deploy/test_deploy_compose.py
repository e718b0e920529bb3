"""docker-compose.yml, read statically as compose would see it with no .env and no shell variables."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from deploy_files import (
    INGESTION_SERVICE,
    REPO,
    daemon_reads,
    load_compose,
    published_ports,
    service_environment,
)

from ingestion.config import (
    CONFIG_PATH_VARIABLE,
    ENVIRONMENT_KEYS,
    IbkrConfig,
    SpoolConfig,
    load_settings,
)

CORE_SERVICES = ("questdb", "valkey", INGESTION_SERVICE)
SIM_SERVICE = "ib-gateway-sim"
GATEWAY_SERVICE = "ib-gateway"
ALL_SERVICES = (*CORE_SERVICES, SIM_SERVICE, GATEWAY_SERVICE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def ingestion(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return services[INGESTION_SERVICE]


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


class TestServices:
    def test_every_service_of_the_stack_is_defined(self, services: dict[str, Any]) -> None:
        """QuestDB, Valkey, the daemon, the simulator and the containerized gateway."""
        assert set(ALL_SERVICES) <= set(services)

    def test_a_plain_up_starts_exactly_the_core_services(self, services: dict[str, Any]) -> None:
        """Stores and daemon have no profile; the simulator and gateway need theirs."""
        for name, service in services.items():
            assert bool(service.get("profiles")) == (name not in CORE_SERVICES), name

    def test_the_simulator_and_the_gateway_sit_in_their_profiles(self, services: dict[str, Any]) -> None:
        """`--profile sim` adds ib-gateway-sim; `--profile ib-gateway` adds ib-gateway."""
        assert services[SIM_SERVICE]["profiles"] == ["sim"]
        assert services[GATEWAY_SERVICE]["profiles"] == ["ib-gateway"]

    @pytest.mark.parametrize("name", ALL_SERVICES)
    def test_every_service_restarts_unless_stopped(self, services: dict[str, Any], name: str) -> None:
        """A crash or a host reboot brings the service back; `docker compose stop` keeps it down."""
        assert services[name]["restart"] == "unless-stopped"

    @pytest.mark.parametrize("name", ALL_SERVICES)
    def test_every_service_rotates_its_logs(self, services: dict[str, Any], name: str) -> None:
        """json-file logs with max-size and max-file, so a chatty week cannot fill the disk."""
        logging = services[name]["logging"]
        assert logging["driver"] == "json-file"
        assert logging["options"]["max-size"]
        assert int(logging["options"]["max-file"]) >= 1


class TestImages:
    def test_pulled_images_are_pinned_to_a_version(self, services: dict[str, Any]) -> None:
        """Every image not built here names a versioned tag: no implicit or moving `latest`."""
        for name, service in services.items():
            if "build" in service:
                continue
            image = service["image"]
            repository, _, tag = image.rpartition(":")
            assert repository, f"{name}: {image} has no tag"
            assert tag not in {"latest", "stable", "edge"}, f"{name}: {image}"
            assert any(ch.isdigit() for ch in tag), f"{name}: {image}"

    def test_the_simulator_runs_the_daemon_image(self, services: dict[str, Any]) -> None:
        """Same build and image name: one build serves both, nothing else to install."""
        sim = services[SIM_SERVICE]
        assert sim["build"] == services[INGESTION_SERVICE]["build"]
        assert sim["image"] == services[INGESTION_SERVICE]["image"]

    def test_the_simulator_listens_where_the_daemon_looks_for_a_paper_gateway(
        self, services: dict[str, Any]
    ) -> None:
        """simulate-gateway on 0.0.0.0:4002 (IBKR_PORT's default), control on 4080."""
        expected = ["simulate-gateway", "--host", "0.0.0.0", "--port", "4002", "--control-port", "4080"]
        assert services[SIM_SERVICE]["command"] == expected
        assert int(service_environment(services[INGESTION_SERVICE])["IBKR_PORT"]) == 4002


class TestHealth:
    @pytest.mark.parametrize("name", ["questdb", "valkey"])
    def test_the_stores_have_healthchecks(self, services: dict[str, Any], name: str) -> None:
        """QuestDB and Valkey report healthy only once they answer."""
        assert services[name]["healthcheck"]["test"]

    def test_questdb_is_probed_without_curl(self, services: dict[str, Any]) -> None:
        """The QuestDB image ships neither curl nor wget; its min health server (9003) is asked via bash."""
        text = healthcheck_text(services["questdb"])
        assert "curl" not in text
        assert "wget" not in text
        assert "9003" in text

    def test_valkey_is_probed_with_valkey_cli_ping(self, services: dict[str, Any]) -> None:
        """`valkey-cli ping` answers PONG once the server accepts commands."""
        text = healthcheck_text(services["valkey"])
        assert "valkey-cli ping" in text
        assert "PONG" in text

    def test_the_daemon_starts_after_both_stores_are_healthy(self, ingestion: dict[str, Any]) -> None:
        """depends_on with condition service_healthy, not merely started."""
        depends = ingestion["depends_on"]
        assert depends["questdb"]["condition"] == "service_healthy"
        assert depends["valkey"]["condition"] == "service_healthy"

    def test_the_daemon_does_not_wait_for_any_gateway(self, ingestion: dict[str, Any]) -> None:
        """A gateway that is down is never a reason not to run: the daemon retries forever."""
        assert set(ingestion["depends_on"]) == {"questdb", "valkey"}

    def test_the_simulator_overrides_the_images_daemon_healthcheck(self, services: dict[str, Any]) -> None:
        """The image probes the daemon's /health/live; the simulator is probed on its control port."""
        text = healthcheck_text(services[SIM_SERVICE])
        assert "/health/live" not in text
        assert "4080" in text


class TestNetwork:
    @pytest.mark.parametrize("name", ALL_SERVICES)
    def test_every_published_port_is_bound_to_loopback(self, services: dict[str, Any], name: str) -> None:
        """127.0.0.1 only: no unauthenticated database, cache or IB API port faces the network."""
        for port in published_ports(services[name]):
            assert port.host_ip == "127.0.0.1", f"{name}: {port}"

    def test_the_user_facing_ports_are_published(self, services: dict[str, Any]) -> None:
        """8500 (API), 9000 (QuestDB console and /exec), 8812 (PG wire), 9009 (ILP TCP)."""
        assert {p.published for p in published_ports(services[INGESTION_SERVICE])} >= {"8500"}
        assert {p.published for p in published_ports(services["questdb"])} >= {"9000", "8812", "9009"}

    def test_the_daemon_reaches_the_host_on_linux_too(self, ingestion: dict[str, Any]) -> None:
        """host.docker.internal maps to host-gateway, as Docker Desktop provides it by itself."""
        assert "host.docker.internal:host-gateway" in ingestion["extra_hosts"]

    def test_the_daemon_looks_for_the_gateway_where_the_config_defaults_say(
        self, ingestion: dict[str, Any]
    ) -> None:
        """Without .env: IBKR host, port and client id equal IbkrConfig's defaults."""
        environment = service_environment(ingestion)
        defaults = IbkrConfig()
        assert environment["IBKR_HOST"] == defaults.host
        assert int(environment["IBKR_PORT"]) == defaults.port
        assert int(environment["IBKR_CLIENT_ID"]) == defaults.client_id

    def test_the_daemon_addresses_the_stores_by_their_service_names(
        self, services: dict[str, Any], ingestion: dict[str, Any]
    ) -> None:
        """QUESTDB_HOST and VALKEY_URL name services of this file, on the ports they listen on."""
        environment = service_environment(ingestion)
        assert environment["QUESTDB_HOST"] in services
        assert environment["QUESTDB_HTTP_PORT"] == "9000"
        valkey = urlsplit(environment["VALKEY_URL"])
        assert valkey.hostname in services
        assert valkey.port == 6379

    def test_the_api_port_inside_matches_the_published_target(self, ingestion: dict[str, Any]) -> None:
        """API_PORT is the container port that 127.0.0.1:8500 forwards to."""
        environment = service_environment(ingestion)
        assert environment["API_PORT"] in {p.target for p in published_ports(ingestion)}


class TestDaemonEnvironment:
    def test_every_variable_set_for_the_daemon_is_one_it_reads(self, ingestion: dict[str, Any]) -> None:
        """Names come from ENVIRONMENT_KEYS, INGESTION_CONFIG, INGESTION__* or PYTHONUNBUFFERED."""
        unread = [name for name in service_environment(ingestion) if not daemon_reads(name)]
        assert unread == []

    def test_the_daemon_accepts_the_environment_compose_gives_it(self, ingestion: dict[str, Any]) -> None:
        """The repository's config/config.yaml plus compose's variables validate (no ConfigError)."""
        environment = service_environment(ingestion)
        settings = load_settings(REPO / "config" / "config.yaml", environment)
        assert settings.questdb.host == environment["QUESTDB_HOST"]
        assert str(settings.questdb.spool.dir) == environment["SPOOL_DIR"]
        assert settings.logging.format == "json"

    def test_compose_sets_every_contract_variable(self, ingestion: dict[str, Any]) -> None:
        """CONTRACTS.md: the environment overrides the config file, and compose sets these."""
        expected = {*ENVIRONMENT_KEYS, CONFIG_PATH_VARIABLE}
        assert expected <= set(service_environment(ingestion))

    def test_logs_are_json_for_docker_logs(self, ingestion: dict[str, Any]) -> None:
        """One JSON object a line on stdout, as CONTRACTS.md promises for the container."""
        assert service_environment(ingestion)["LOG_FORMAT"] == "json"

    def test_the_spool_is_a_named_volume_at_spool_dir(self, compose: dict[str, Any]) -> None:
        """A named volume (not a bind mount) inherits uid 10001's ownership and outlives the container."""
        ingestion = compose["services"][INGESTION_SERVICE]
        spool = service_environment(ingestion)["SPOOL_DIR"]
        assert spool == str(SpoolConfig().dir)
        mounts = dict(volume.split(":")[:2] for volume in ingestion["volumes"])
        by_target = {target: source for source, target in mounts.items()}
        assert by_target[spool] in compose["volumes"]

    def test_the_config_mount_is_where_ingestion_config_points(self, ingestion: dict[str, Any]) -> None:
        """./config is mounted read-only over /app/config, the directory INGESTION_CONFIG names."""
        config_path = service_environment(ingestion)[CONFIG_PATH_VARIABLE]
        assert "./config:/app/config:ro" in ingestion["volumes"]
        assert config_path.startswith("/app/config/")

    def test_the_daemon_gets_time_to_flush_on_stop(self, ingestion: dict[str, Any]) -> None:
        """stop_grace_period beyond Docker's 10 s default before SIGKILL."""
        grace = ingestion["stop_grace_period"]
        assert grace.endswith("s")
        assert int(grace[:-1]) > 10

    def test_gateway_credentials_never_reach_the_daemon(self, ingestion: dict[str, Any]) -> None:
        """TWS_USERID/TWS_PASSWORD belong to ib-gateway only; the daemon has no env_file."""
        assert "env_file" not in ingestion
        assert not {"TWS_USERID", "TWS_PASSWORD"} & set(service_environment(ingestion))
