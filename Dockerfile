# syntax=docker/dockerfile:1
#
# The data-ingestion daemon, as one small image.
#
#   docker build -t market-data-ingestion:local .
#   docker run --rm market-data-ingestion:local check-config
#
# Both stages use the same base so that the venv's interpreter path (/usr/local/bin/python3.11)
# is the same where it is built and where it runs. The tag is pinned to a patch release; bump it
# deliberately (and rebuild) rather than letting a moving tag change what runs in production.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------------------
# builder: a virtualenv with the package and its pinned dependencies. Every dependency ships a
# manylinux wheel for CPython 3.11 (numpy, pandas, pydantic-core, questdb), so no compiler.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build

# Dependencies first, in their own layer: a change under src/ does not re-download them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt

# Then the package itself (README.md is read by the build backend: pyproject's `readme`).
COPY README.md ./
COPY src/ ./src/
RUN pip install --no-cache-dir -c constraints.txt . \
    && ingestion --help > /dev/null

# ---------------------------------------------------------------------------------------------
# runtime: the venv, the default config, an unprivileged user and nothing else.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

LABEL org.opencontainers.image.title="data-ingestion" \
      org.opencontainers.image.description="IB Gateway market data -> QuestDB (ILP/HTTP) + Valkey, with FRED series"

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    INGESTION_CONFIG=/app/config/config.yaml \
    SPOOL_DIR=/var/lib/ingestion/spool

# A fixed uid/gid, so that a bind-mounted spool or config can be chowned to it on the host
# (`chown -R 10001:10001 ./spool`). The spool directory is created here, owned by that user,
# before VOLUME: Docker copies this ownership into a new named volume on first use.
RUN groupadd --system --gid "${APP_GID}" ingestion \
    && useradd --system --uid "${APP_UID}" --gid "${APP_GID}" --home-dir /app \
        --no-create-home --shell /usr/sbin/nologin ingestion \
    && mkdir -p /app /var/lib/ingestion/spool \
    && chown -R "${APP_UID}:${APP_GID}" /var/lib/ingestion

COPY --from=builder /opt/venv /opt/venv
# The default configuration; mount a directory over /app/config (read-only is fine) to replace it.
COPY config/ /app/config/

WORKDIR /app
USER 10001:10001

VOLUME ["/var/lib/ingestion/spool"]
EXPOSE 8500

# Liveness only (the process answers HTTP): /health itself answers 503 while the gateway is down,
# and a container that is merely waiting for IB Gateway must not be reported unhealthy or
# restarted. Python's urllib, because the slim base has no curl. The port follows API_PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('API_PORT', '8500'), timeout=4)"]

# No init process (tini): `ingestion` is PID 1 on purpose. It installs its own SIGTERM/SIGINT
# handlers and shuts down in stages (flush QuestDB, close Valkey, exit 0). It waits for its one child
# process, the ILP writer (sinks/ilp_process.py), also when that child dies and is replaced, so there
# are no zombies for an init to reap. Exec form, so no shell sits between Docker's
# SIGTERM and the daemon. Give it time to flush: compose sets stop_grace_period: 30s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ingestion"]
CMD ["run"]
