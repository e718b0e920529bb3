"""Configuration: defaults < YAML < environment, and one clear line per problem."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from ingestion.config import (
    DEFAULT_UNIVERSE,
    ENVIRONMENT_KEYS,
    ConfigError,
    Settings,
    load_settings,
    mask_url,
    masked_dump,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO / "config" / "config.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems_for(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ or {})
    return caught.value.problems


class TestShippedConfig:
    def test_shipped_file_is_valid_and_matches_the_contract_defaults(self) -> None:
        """config/config.yaml loads, with IBKR at host.docker.internal:4002, client id 10 and the 15 ETFs."""
        settings = load_settings(SHIPPED_CONFIG, {})
        assert (settings.ibkr.host, settings.ibkr.port, settings.ibkr.client_id) == (
            "host.docker.internal",
            4002,
            10,
        )
        assert settings.symbols == DEFAULT_UNIVERSE
        assert settings.api.port == 8500
        assert settings.questdb.http_port == 9000

    def test_shipped_file_states_every_key_of_the_model(self) -> None:
        """The shipped file is complete: every key the models know appears in it, so it documents them all."""
        shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
        defaults = Settings().model_dump(mode="json")
        missing = [
            path for path in _key_paths(defaults) if not _has_path(shipped, path) and path[0] != "universe"
        ]
        assert missing == []

    def test_shipped_values_equal_the_model_defaults(self) -> None:
        """Running with no file at all or with the shipped file gives the same settings."""
        assert load_settings(SHIPPED_CONFIG, {}) == Settings()


def _key_paths(data: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for key, value in data.items():
        path = (*prefix, key)
        paths.extend(_key_paths(value, path) if isinstance(value, dict) else [path])
    return paths


def _has_path(data: dict, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


class TestProblems:
    def test_wrong_type_names_key_value_and_expectation(self, tmp_path: Path) -> None:
        """A string where a number belongs is one line with the key path, the value and what was expected."""
        assert problems_for(write(tmp_path, "ibkr:\n  client_id: abc\n")) == [
            f"ibkr.client_id: 'abc' is invalid (in {tmp_path / 'config.yaml'}): "
            "Input should be a valid integer, unable to parse string as an integer"
        ]

    def test_unknown_key_is_an_error_with_a_suggestion(self, tmp_path: Path) -> None:
        """A typo does not pass silently: the unknown key is named and the likely intended key suggested."""
        (line,) = problems_for(write(tmp_path, "ibkr:\n  prot: 4001\n"))
        assert line.startswith("ibkr.prot: unknown key")
        assert "did you mean 'port'?" in line

    def test_unknown_section_is_an_error(self, tmp_path: Path) -> None:
        """A misspelt top-level section is reported too."""
        (line,) = problems_for(write(tmp_path, "questbd:\n  host: x\n"))
        assert line.startswith("questbd: unknown key")
        assert "did you mean 'questdb'?" in line

    def test_out_of_range_port(self, tmp_path: Path) -> None:
        """A port above 65535 is refused with the limit in the message."""
        (line,) = problems_for(write(tmp_path, "ibkr:\n  port: 70000\n"))
        assert line.startswith("ibkr.port: 70000 is invalid")
        assert "less than or equal to 65535" in line

    def test_empty_symbol_list(self, tmp_path: Path) -> None:
        """An empty universe is refused: a daemon with nothing to subscribe is a configuration mistake."""
        (line,) = problems_for(write(tmp_path, "universe: []\n"))
        assert line.startswith("universe: () is invalid") or line.startswith("universe: [] is invalid")
        assert "at least 1 item" in line

    def test_every_problem_gets_its_own_line(self, tmp_path: Path) -> None:
        """Four independent mistakes give four lines, not the first one only."""
        text = "ibkr:\n  port: 0\n  client_id: x\n  hots: a\nuniverse: []\n"
        lines = problems_for(write(tmp_path, text))
        assert [line.split(":")[0] for line in lines] == [
            "ibkr.port",
            "ibkr.client_id",
            "ibkr.hots",
            "universe",
        ]

    def test_bad_symbol_is_located_by_index(self, tmp_path: Path) -> None:
        """A bad entry inside the universe list is named by its position."""
        (line,) = problems_for(write(tmp_path, "universe: [SPY, 'S P Y!']\n"))
        assert line.startswith("universe[1].symbol: 'S P Y!' is invalid")

    def test_repeated_symbol(self, tmp_path: Path) -> None:
        """The same symbol twice would double-subscribe; it is refused."""
        (line,) = problems_for(write(tmp_path, "universe: [SPY, QQQ, SPY]\n"))
        assert "symbols listed more than once: SPY" in line

    def test_backoff_initial_above_max(self, tmp_path: Path) -> None:
        """Cross-field rules are checked and explained."""
        (line,) = problems_for(write(tmp_path, "ibkr:\n  reconnect:\n    initial_seconds: 20\n"))
        assert line.startswith("ibkr.reconnect:")
        assert "must not exceed max_seconds" in line

    def test_yaml_syntax_error_points_at_the_line(self, tmp_path: Path) -> None:
        """Broken YAML is reported with file, line and column, not a traceback."""
        (line,) = problems_for(write(tmp_path, "ibkr:\n  port: [4002\n"))
        assert line.startswith(f"{tmp_path / 'config.yaml'}:")
        assert "not valid YAML" in line

    def test_top_level_must_be_a_mapping(self, tmp_path: Path) -> None:
        """A file that is a list is refused with what was found."""
        (line,) = problems_for(write(tmp_path, "- a\n- b\n"))
        assert "top level must be a mapping" in line

    def test_a_file_that_is_not_utf8_is_one_clear_line(self, tmp_path: Path) -> None:
        """Found by the chaos suite's fuzzing: binary or Latin-1 bytes give a ConfigError, not a traceback."""
        path = tmp_path / "config.yaml"
        path.write_bytes(b"ibkr:\n  host: caf\xe9\n")
        (line,) = problems_for(path)
        assert "is not UTF-8 text" in line

    def test_missing_file(self, tmp_path: Path) -> None:
        """A path that does not exist says so and how to choose another."""
        (line,) = problems_for(tmp_path / "nope.yaml")
        assert line.startswith("config file not found:")
        assert "INGESTION_CONFIG" in line

    def test_secret_values_are_not_echoed_in_problems(self, tmp_path: Path) -> None:
        """A webhook URL that fails validation is masked in the message: it carries a token."""
        lines = problems_for(write(tmp_path, "alerts:\n  webhooks: {a: 'https://hooks.example/T0/SECRET'}\n"))
        assert lines
        assert all("SECRET" not in line for line in lines)


class TestEnvironment:
    @pytest.mark.parametrize(
        ("variable", "value", "read"),
        [
            ("IBKR_HOST", "gw.local", lambda s: s.ibkr.host),
            ("IBKR_PORT", "4001", lambda s: s.ibkr.port),
            ("IBKR_CLIENT_ID", "77", lambda s: s.ibkr.client_id),
            ("QUESTDB_HOST", "qdb", lambda s: s.questdb.host),
            ("QUESTDB_HTTP_PORT", "19000", lambda s: s.questdb.http_port),
            ("VALKEY_URL", "redis://cache:6380/2", lambda s: s.valkey.url.get_secret_value()),
            ("FRED_API_KEY", "abcdef0123456789", lambda s: s.fred.api_key.get_secret_value()),
            ("API_PORT", "8600", lambda s: s.api.port),
            ("LOG_LEVEL", "debug", lambda s: s.logging.level),
            ("LOG_FORMAT", "console", lambda s: s.logging.format),
            ("SPOOL_DIR", "/tmp/spool-x", lambda s: str(s.questdb.spool.dir)),
        ],
    )
    def test_each_contract_variable_overrides_its_key(self, tmp_path: Path, variable, value, read) -> None:
        """Every plain variable of CONTRACTS.md wins over the file."""
        path = write(tmp_path, "ibkr:\n  host: from-file\n  port: 4002\n")
        expected = {"4001": 4001, "77": 77, "19000": 19000, "8600": 8600, "debug": "DEBUG"}.get(value, value)
        assert read(load_settings(path, {variable: value})) == expected

    def test_the_parametrized_list_covers_every_contract_variable(self) -> None:
        """If a variable is added to ENVIRONMENT_KEYS, the test above must grow with it."""
        assert set(ENVIRONMENT_KEYS) == {
            "IBKR_HOST", "IBKR_PORT", "IBKR_CLIENT_ID", "QUESTDB_HOST", "QUESTDB_HTTP_PORT", "VALKEY_URL",
            "FRED_API_KEY", "API_PORT", "LOG_LEVEL", "LOG_FORMAT", "SPOOL_DIR",
        }  # fmt: skip

    def test_ingestion_config_chooses_the_file(self, tmp_path: Path) -> None:
        """With no --config, $INGESTION_CONFIG names the file."""
        path = write(tmp_path, "ibkr:\n  port: 7497\n")
        assert load_settings(None, {"INGESTION_CONFIG": str(path)}).ibkr.port == 7497

    def test_nested_override(self, tmp_path: Path) -> None:
        """INGESTION__SECTION__KEY sets any key, including nested ones."""
        env = {"INGESTION__IBKR__PORT": "4001", "INGESTION__IBKR__RECONNECT__MAX_SECONDS": "30"}
        settings = load_settings(write(tmp_path, ""), env)
        assert (settings.ibkr.port, settings.ibkr.reconnect.max_seconds) == (4001, 30.0)

    def test_event_loop_is_auto_unless_set(self, tmp_path: Path) -> None:
        """auto by default; asyncio or uvloop when asked for, by file or environment."""
        assert load_settings(write(tmp_path, ""), {}).pipeline.event_loop == "auto"
        env = {"INGESTION__PIPELINE__EVENT_LOOP": "asyncio"}
        assert load_settings(write(tmp_path, ""), env).pipeline.event_loop == "asyncio"

    def test_uvloop_asked_for_but_not_installed_is_a_problem(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An explicit uvloop where it cannot be imported (Windows) is refused at load, not at start."""
        monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
        (line,) = problems_for(write(tmp_path, "pipeline:\n  event_loop: uvloop\n"))
        assert line.startswith("pipeline.event_loop: 'uvloop' is invalid")
        assert "uvloop is not installed" in line
        assert (
            load_settings(write(tmp_path, "pipeline:\n  event_loop: auto\n"), {}).pipeline.event_loop
            == "auto"
        )

    def test_nested_override_of_a_list(self, tmp_path: Path) -> None:
        """Lists are written in YAML flow style."""
        settings = load_settings(write(tmp_path, ""), {"INGESTION__UNIVERSE": "[SPY, QQQ]"})
        assert settings.symbols == ("SPY", "QQQ")

    def test_environment_beats_file_beats_default(self, tmp_path: Path) -> None:
        """Precedence: defaults < YAML < environment."""
        path = write(tmp_path, "ibkr:\n  port: 4001\n  client_id: 3\n")
        settings = load_settings(path, {"IBKR_CLIENT_ID": "4"})
        assert (settings.ibkr.host, settings.ibkr.port, settings.ibkr.client_id) == (
            "host.docker.internal",
            4001,
            4,
        )

    def test_bad_environment_value_names_the_variable(self, tmp_path: Path) -> None:
        """A bad override says which variable it came from."""
        (line,) = problems_for(write(tmp_path, ""), {"IBKR_PORT": "abc"})
        assert line.startswith("ibkr.port: 'abc' is invalid (from IBKR_PORT)")

    def test_blank_fred_key_means_no_key(self, tmp_path: Path) -> None:
        """FRED_API_KEY= (empty, as .env.example ships it) disables FRED instead of failing auth."""
        assert load_settings(write(tmp_path, ""), {"FRED_API_KEY": ""}).fred.api_key is None


class TestMasking:
    def test_masked_dump_hides_every_secret(self, tmp_path: Path) -> None:
        """The FRED key, QuestDB password, webhook URLs and the Valkey password never appear."""
        text = (
            "questdb:\n  password: qpass-123\nalerts:\n  webhooks: ['https://hooks.example/T0/hook-secret']\n"
        )
        env = {"FRED_API_KEY": "fredkey-456", "VALKEY_URL": "redis://:valkey-pw@cache:6379/0"}
        dumped = str(masked_dump(load_settings(write(tmp_path, text), env)))
        for secret in ("qpass-123", "hook-secret", "fredkey-456", "valkey-pw"):
            assert secret not in dumped
        assert "redis://:********@cache:6379/0" in dumped

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://valkey:6379/0", "redis://valkey:6379/0"),
            ("redis://:pw@valkey:6379/0", "redis://:********@valkey:6379/0"),
            ("rediss://user:p%40ss@valkey:6380", "rediss://user:********@valkey:6380"),
        ],
    )
    def test_mask_url(self, url: str, shown: str) -> None:
        """Only the password part of a URL is hidden; host and port stay readable."""
        assert mask_url(url) == shown
