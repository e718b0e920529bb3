"""Readers for the deployment files, so the tests can check them without a Docker engine.

The Dockerfile is split into instructions (continuation lines joined, comments dropped) grouped by
build stage; docker-compose.yml is loaded with PyYAML and its ``${VAR:-default}`` references are
resolved the way compose resolves them when the variable is unset.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ingestion import config

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
GUIDE = REPO / "docs" / "IBKR_SETUP_GUIDE.md"

INGESTION_SERVICE = "data-ingestion"

# Variables the daemon reads besides ENVIRONMENT_KEYS, INGESTION_CONFIG and INGESTION__*:
# PYTHONUNBUFFERED is read by the interpreter itself (log lines reach `docker logs` at once).
STANDARD_PYTHON_VARIABLES = frozenset({"PYTHONUNBUFFERED"})

# Variables docker compose itself reads from .env (they never reach a container).
COMPOSE_CLI_VARIABLES = frozenset({"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"})

_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


def daemon_reads(name: str) -> bool:
    """Whether the daemon (or its interpreter) acts on the environment variable ``name``."""
    return (
        name in config.ENVIRONMENT_KEYS
        or name == config.CONFIG_PATH_VARIABLE
        or name.startswith(config.NESTED_PREFIX)
        or name in STANDARD_PYTHON_VARIABLES
    )


# --- Dockerfile ------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str] | None:
        """The JSON-array form of the arguments, or ``None`` for shell form."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV assignments of this stage (``KEY=value`` form), later ones winning."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in _split_words(instruction.arguments):
                name, sep, value = token.partition("=")
                if sep:
                    values[name] = value
        return values


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolved_base(self, stage: Stage) -> str:
        """The stage's FROM image with global ``ARG`` defaults substituted."""
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.global_args.get(m.group(1), m.group(0)), stage.base)


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        arguments = arguments.strip()
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if keyword == "ARG":
                name, _, default = arguments.partition("=")
                global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments))
    return Dockerfile(global_args, stages)


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit between continuation lines, as Docker allows
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def _split_words(text: str) -> list[str]:
    # ENV values here carry no quoted spaces; a plain split is enough and easy to read.
    return text.split()


# --- docker-compose.yml --------------------------------------------------------------------


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as compose sees it with an empty environment (no .env, no shell vars)."""
    return resolve_defaults(yaml.safe_load(path.read_text(encoding="utf-8")))


def resolve_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: resolve_defaults(value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve_defaults(value) for value in node]
    if isinstance(node, str):
        return _REFERENCE.sub(_default_of, node).replace("$$", "$")
    return node


def _default_of(match: re.Match[str]) -> str:
    op = match.group("op") or ""
    return match.group("arg") if op in {"-", ":-"} else ""


def compose_references(path: Path = COMPOSE_FILE) -> dict[str, str]:
    """Every ``${VAR...}`` in the compose file's values (not its comments), with its default."""
    found: dict[str, str] = {}
    pending: list[Any] = [yaml.safe_load(path.read_text(encoding="utf-8"))]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, str):
            found.update((m.group("name"), _default_of(m)) for m in _REFERENCE.finditer(node))
    return found


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a mapping, from either the list or the mapping syntax."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.partition("=") for item in environment)
        return {name: value for name, _, value in pairs}
    return {name: "" if value is None else str(value) for name, value in environment.items()}


def raw_service_environment(name: str, path: Path = COMPOSE_FILE) -> dict[str, str]:
    """A service's environment before interpolation, to see which ``${VAR}`` feeds which key."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return service_environment(raw["services"][name])


@dataclass(frozen=True)
class PublishedPort:
    host_ip: str
    published: str
    target: str


def published_ports(service: dict[str, Any]) -> list[PublishedPort]:
    """The ``ports`` of a service in either syntax: ``[IP:]HOST:CONTAINER`` strings or mappings."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append(
                PublishedPort(
                    str(entry.get("host_ip", "")), str(entry.get("published", "")), str(entry["target"])
                )
            )
            continue
        parts = str(entry).split(":")
        if len(parts) == 3:
            result.append(PublishedPort(parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            result.append(PublishedPort("", parts[0], parts[1]))
        else:
            result.append(PublishedPort("", "", parts[0]))
    return result


# --- .env.example ----------------------------------------------------------------------------


def env_example_assignments(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``NAME=value`` lines of .env.example (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example: not a NAME=value line: {raw!r}"
        values[name.strip()] = value.strip()
    return values
