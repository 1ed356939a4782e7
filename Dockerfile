# syntax=docker/dockerfile:1
# keystile: `docker build -t keystile .` then see deploy/compose.yaml or deploy/k8s/.
# The image serves only: PostgreSQL and Redis are required (KEYSTILE_DATABASE_URL,
# KEYSTILE_REDIS_URL); the embedded development servers are switched off.

# --- build: compile wheels (asyncpg, argon2-cffi, uvloop) with a toolchain ---
FROM python:3.12-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/keystile
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/keystile/bin/pip install .

# --- runtime: the virtualenv and the config files, no compiler, not root ---
FROM python:3.12-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 keystile \
    && useradd --system --uid 10001 --gid keystile --home-dir /app --shell /usr/sbin/nologin keystile \
    && mkdir -p /var/lib/keystile \
    && chown keystile:keystile /var/lib/keystile
COPY --from=build /opt/keystile /opt/keystile
WORKDIR /app
COPY alembic.ini settings.toml hypercorn.toml ./
COPY alembic ./alembic
ENV PATH=/opt/keystile/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KEYSTILE_SETTINGS_FILE=/app/settings.toml \
    KEYSTILE_ALLOW_EMBEDDED=false \
    KEYSTILE_HOST=0.0.0.0 \
    KEYSTILE_PORT=8000 \
    KEYSTILE_DATA_DIR=/var/lib/keystile
USER 10001:10001
EXPOSE 8000
# Liveness only: /readyz (PostgreSQL and Redis) is for the load balancer, not for restarts.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# keystile serve drains on SIGTERM (S32): give it drain_delay + graceful_timeout (docker stop -t).
STOPSIGNAL SIGTERM
ENTRYPOINT ["keystile"]
CMD ["serve"]
