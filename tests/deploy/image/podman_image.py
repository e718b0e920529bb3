"""The Dockerfile built by podman and its image run the one way this machine allows.

Building: ``podman build --isolation chroot --network host --format docker`` with ``PYTHON_IMAGE`` set to
a stand-in for the official python image, made from Debian's packages by scripts/image-base.sh (no
container registry is reachable here). ``--format docker`` because Docker's image format is the one that
keeps HEALTHCHECK (the OCI format drops it).

Running: ``podman run`` cannot start a container on these machines (crun: "setrlimit `RLIMIT_NOFILE`:
Operation not permitted", and RLIMIT_NPROC even when asked for the current limits with ``--ulimit``;
"cgroups in hybrid mode not supported" where cgroups are on). So a container is
created and its filesystem mounted (``podman create`` + ``podman mount``: the image's layers under a
writable layer, as a container gets them), and a command runs in it under ``chroot`` with the image's own
User, Env, WorkingDir and Entrypoint as ``podman image inspect`` reports them, in a private mount namespace
that has /proc, /dev and the volumes compose would mount (a named volume made as Docker makes it, from the
image's directory). The network namespace is the host's, so loopback reaches the simulator, Valkey and
the QuestDB double that the test starts. Docker's own runtime (cgroups, capabilities, restart policy) is
not exercised: README.md, "What the image test proves".
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
BASE_SCRIPT = REPO / "scripts" / "image-base.sh"
IMAGE_TAG = "localhost/market-data-ingestion:image-test"
# A cold start makes the base (about a minute) and builds both stages (about a minute) on 2 shared cores.
BUILD_TIMEOUT_SECONDS = 600
STALE_LAYERS_HOURS = 168


class BuildFailed(AssertionError):
    """``podman build`` exited non-zero; the message ends with the build's last lines."""


def base_image() -> str:
    """The name of the cached base (scripts/image-base.sh builds it when its inputs changed)."""
    completed = subprocess.run(
        [str(BASE_SCRIPT)], stdout=subprocess.PIPE, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=True
    )
    return completed.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class Build:
    tag: str
    seconds: float
    log: str


def build(tag: str, base: str, context: Path = REPO, dockerfile: Path | None = None) -> Build:
    """``podman build`` of ``context`` (its Dockerfile, or ``dockerfile``) on ``base``."""
    command = [
        "podman", "build", "--isolation", "chroot", "--network", "host", "--format", "docker",
        "--build-arg", f"PYTHON_IMAGE={base}", "--tag", tag,
    ]  # fmt: skip
    if dockerfile is not None:
        command += ["--file", str(dockerfile)]
    started = time.monotonic()
    completed = subprocess.run(
        [*command, str(context)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        tail = "\n".join(completed.stdout.splitlines()[-25:])
        msg = f"podman build of {context} failed with exit {completed.returncode}:\n{tail}"
        raise BuildFailed(msg)
    _prune_stale_layers()
    return Build(tag, time.monotonic() - started, completed.stdout)


def _prune_stale_layers() -> None:
    """Drop untagged images a week old: every change under src/ leaves one more chain of them. Layers
    still in use as the build cache go too once they are that old (a plain prune would take the builder
    stage's cache at once), which costs one cold build a week."""
    subprocess.run(
        ["podman", "image", "prune", "--force", "--filter", f"until={STALE_LAYERS_HOURS}h"],
        capture_output=True,
        check=False,
    )


def image_size_bytes(tag: str) -> int:
    return int(_podman("image", "inspect", "--format", "{{.Size}}", tag).strip())


@dataclass(frozen=True)
class ImageConfig:
    """What ``podman image inspect`` says the image runs, and as whom."""

    user: str
    env: dict[str, str]
    working_dir: str
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    volumes: list[str]
    exposed_ports: list[str]

    @property
    def uid(self) -> int:
        return int(self.user.split(":")[0])

    def healthcheck_argv(self) -> list[str]:
        """The HEALTHCHECK as Docker executes it: CMD as is, CMD-SHELL through /bin/sh -c."""
        kind, *rest = self.healthcheck
        if kind == "CMD":
            return rest
        if kind == "CMD-SHELL":
            return ["/bin/sh", "-c", rest[0]]
        msg = f"no runnable HEALTHCHECK in the image: {self.healthcheck}"
        raise AssertionError(msg)


def inspect(tag: str) -> ImageConfig:
    (image,) = json.loads(_podman("image", "inspect", tag))
    config: dict[str, Any] = image["Config"]
    healthcheck = (image.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test") or []
    return ImageConfig(
        user=config.get("User") or "0:0",
        env=dict(item.partition("=")[::2] for item in config.get("Env") or []),
        working_dir=config.get("WorkingDir") or "/",
        entrypoint=list(config.get("Entrypoint") or []),
        cmd=list(config.get("Cmd") or []),
        healthcheck=list(healthcheck),
        volumes=sorted(config.get("Volumes") or {}),
        exposed_ports=sorted(config.get("ExposedPorts") or {}),
    )


@dataclass(frozen=True)
class Mount:
    """A host directory mounted at ``target`` in the container, as compose's ``volumes`` entries are."""

    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Container:
    """A container's mounted filesystem; ``command`` runs something in it as the image would."""

    root: Path
    config: ImageConfig

    def path(self, inside: str) -> Path:
        """The host path of ``inside`` (an absolute path in the container)."""
        return self.root / inside.lstrip("/")

    def command(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, mounts: Sequence[Mount] = ()
    ) -> list[str]:
        """The host command that runs ``argv`` in the container: the image's user, its Env (``env``
        added over it, as ``docker run -e`` and compose's ``environment`` do), its WorkingDir, and
        ``mounts`` over its filesystem. The process it starts execs down to ``argv`` itself, so a signal
        sent to it reaches ``argv``; the mounts live in its own mount namespace and end with it."""
        environment = {**self.config.env, **(env or {})}
        return [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", self._enter(mounts), "sh",
            f"--userspec={self.config.user}", str(self.root),
            "/usr/bin/env", "-i", f"--chdir={self.config.working_dir}",
            *(f"{name}={value}" for name, value in environment.items()),
            *argv,
        ]  # fmt: skip

    def _enter(self, mounts: Sequence[Mount]) -> str:
        """/proc, and /dev with /dev/shm (the ILP writer's multiprocessing needs it), then the mounts,
        then chroot to the arguments."""
        steps = [
            f"mount -t proc proc {shlex.quote(str(self.path('/proc')))}",
            f"mount --rbind /dev {shlex.quote(str(self.path('/dev')))}",
        ]
        for mount in mounts:
            target = shlex.quote(str(self.path(mount.target)))
            steps += [f"mkdir -p {target}", f"mount --bind {shlex.quote(str(mount.source))} {target}"]
            if mount.read_only:
                steps.append(f"mount -o remount,bind,ro {target}")
        return " && ".join([*steps, 'exec chroot "$@"'])

    def named_volume(self, target: str, host_dir: Path) -> Mount:
        """A new named volume at ``target``, as Docker makes it on first use: it takes the content,
        owner and mode of the image's directory there (an empty root-owned one if there is none)."""
        image_dir = self.path(target)
        if image_dir.is_dir():
            shutil.copytree(image_dir, host_dir, symlinks=True)
            status = image_dir.stat()
            os.chown(host_dir, status.st_uid, status.st_gid)
            os.chmod(host_dir, stat.S_IMODE(status.st_mode))
        else:
            host_dir.mkdir(parents=True)
        return Mount(host_dir, target)

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv, env, mounts),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, mounts: Sequence[Mount] = ()
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(argv, env, mounts), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )


@contextmanager
def container(tag: str) -> Iterator[Container]:
    """A fresh container of ``tag``, mounted; unmounted and removed afterwards."""
    config = inspect(tag)
    name = _podman("create", tag).strip()
    try:
        root = Path(_podman("mount", name).strip())
        try:
            yield Container(root, config)
        finally:
            _podman("umount", name)
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, check=False)


def builder_available() -> bool:
    return all(shutil.which(tool) for tool in ("podman", "debootstrap", "unshare", "chroot"))


def _podman(*args: str) -> str:
    completed = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120, check=False)
    if completed.returncode != 0:
        msg = f"podman {' '.join(args)} failed ({completed.returncode}): {completed.stderr.strip()}"
        raise AssertionError(msg)
    return completed.stdout
