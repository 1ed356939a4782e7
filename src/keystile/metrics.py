"""Every Prometheus metric keystile exports, and how they are collected and rendered.

The metric objects are module-level on purpose, and this is the one exception to
"no module-level singletons": prometheus-client's registry is process-global by
design, and in multiprocess mode (several Hypercorn workers) each value lives in an
mmap file keyed by metric name and labels per process. Two objects for one name in
one process would overwrite each other's file entries, so there must be exactly one
per process. Importing this module has no other effect, and the layers that record
(services, stores, web) import it without importing any web framework.

`keystile serve` sets PROMETHEUS_MULTIPROC_DIR (see `keystile.serving`) before any
worker starts, so every worker writes to the shared directory and `/metrics`
answers with the sum over workers whichever of them serves the scrape.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sized
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)

__all__ = [
    "BACKGROUND_RESTARTS",
    "CACHE_LOOKUPS",
    "CONTENT_TYPE",
    "DB_POOL_CONNECTIONS",
    "HASHES_IN_PROGRESS",
    "HASH_CPU",
    "HASH_DURATION",
    "HASH_QUEUE_DEPTH",
    "HASH_REJECTIONS",
    "HASH_WAIT",
    "HTTP_REQUESTS_IN_PROGRESS",
    "HTTP_REQUEST_DURATION",
    "LOGINS",
    "MAIL_DEAD",
    "MAIL_FAILED",
    "MAIL_OLDEST_UNSENT_AGE",
    "MAIL_QUEUED",
    "MAIL_SENT",
    "MAIL_UNSENT",
    "MULTIPROC_ENV",
    "RATE_LIMITED",
    "REDIS_POOL_CONNECTIONS",
    "REFRESH_REUSE_DETECTED",
    "PoolSampler",
    "cache_lookups",
    "mark_process_dead",
    "render",
    "request_duration",
]

_log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# In multiprocess mode prometheus-client asks for the process id on every update, to
# notice a fork; glibc no longer caches getpid, so that is a system call per counter
# increment (6.5 % of a worker's samples under GET /v1/me, bench/README.md). The id is
# kept here instead and refreshed in a forked child, which is all the check needs.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


def _process_id() -> int:
    return _pid


os.register_at_fork(after_in_child=_forked)
if os.environ.get(MULTIPROC_ENV):
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)  # type: ignore[no-untyped-call]

# --- HTTP -----------------------------------------------------------------------------
HTTP_REQUEST_DURATION = Histogram(
    "keystile_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by route template "
    "(never the raw path) and status.",
    ["method", "route", "status"],
)


@functools.lru_cache(maxsize=1024)
def request_duration(method: str, route: str, status: str) -> Histogram:
    """`HTTP_REQUEST_DURATION`'s child for these labels, looked up once per combination.

    `labels()` takes a lock and re-validates the values on every call; the label space
    (methods x route templates x statuses) is small and fixed.
    """
    return HTTP_REQUEST_DURATION.labels(method, route, status)


HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "keystile_http_requests_in_progress",
    "Requests being handled right now, summed over live workers.",
    multiprocess_mode="livesum",
)

# --- logins and abuse -----------------------------------------------------------------
LOGINS = Counter(
    "keystile_logins_total",
    "Password checks at login, by outcome: success, wrong_password, unknown_account, "
    "disabled_account, rejected (bad input), throttled (login backoff), overloaded, "
    "unavailable.",
    ["outcome"],
)
RATE_LIMITED = Counter(
    "keystile_rate_limited_total",
    "Requests refused with 429 by a rate limit, by the limit's name.",
    ["limit"],
)
REFRESH_REUSE_DETECTED = Counter(
    "keystile_refresh_reuse_detected_total",
    "Refresh tokens presented again after use, outside the grace window (family revoked).",
)

# --- password hashing -----------------------------------------------------------------
HASH_QUEUE_DEPTH = Gauge(
    "keystile_hash_queue_depth",
    "Hashes admitted and waiting for a hashing thread, summed over live workers.",
    multiprocess_mode="livesum",
)
HASHES_IN_PROGRESS = Gauge(
    "keystile_hashes_in_progress",
    "Hashes running on a hashing thread right now, summed over live workers.",
    multiprocess_mode="livesum",
)
HASH_WAIT = Histogram(
    "keystile_hash_wait_seconds",
    "Time an admitted hash waited for a free hashing thread.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HASH_DURATION = Histogram(
    "keystile_hash_duration_seconds",
    "Time one argon2 hash or verification took on its thread, by operation.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
HASH_CPU = Counter(
    "keystile_hash_cpu_seconds_total",
    "CPU time the hashing threads spent in hashes and verifications, by operation: set"
    " against the process's CPU, it shows what logins cost beside their hashes.",
    ["operation"],
)
HASH_REJECTIONS = Counter(
    "keystile_hash_rejections_total",
    "Hashes refused by admission control (the queue was full): each is a 503 + Retry-After.",
)

# --- caches ---------------------------------------------------------------------------
CACHE_LOOKUPS = Counter(
    "keystile_cache_lookups_total",
    "Cache lookups by cache and result: local_hit, redis_hit, miss (the loader ran), "
    "outage_copy (PostgreSQL down: served from the copy kept for the outage grace), "
    "or hit/miss for single-level caches.",
    ["cache", "result"],
)


@functools.lru_cache(maxsize=64)
def cache_lookups(cache: str, result: str) -> Counter:
    """`CACHE_LOOKUPS`'s child for these labels, looked up once per combination (a
    read of GET /v1/me counts two lookups)."""
    return CACHE_LOOKUPS.labels(cache, result)


# --- pools (sampled by PoolSampler) ---------------------------------------------------
DB_POOL_CONNECTIONS = Gauge(
    "keystile_db_pool_connections",
    "PostgreSQL pool connections by state (in_use, idle), summed over live workers.",
    ["state"],
    multiprocess_mode="livesum",
)
REDIS_POOL_CONNECTIONS = Gauge(
    "keystile_redis_pool_connections",
    "Redis pool connections by state (in_use, idle), summed over live workers.",
    ["state"],
    multiprocess_mode="livesum",
)

# --- background loops (keystile.tasks.background) -------------------------------------
BACKGROUND_RESTARTS = Counter(
    "keystile_background_restarts_total",
    "Worker loops that failed with an unexpected error and are started again after a "
    "backoff, by task (invalidation, keyring, outbox-sender, housekeeping, pool-sampler).",
    ["task"],
)

# --- mail (the outbox and its senders) ---------------------------------------------------
MAIL_QUEUED = Counter(
    "keystile_mail_queued_total",
    "Messages written to the outbox, by kind (verify_email, password_reset, ...).",
    ["kind"],
)
MAIL_SENT = Counter(
    "keystile_mail_sent_total",
    "Messages handed to the SMTP server (or the development Maildir), by kind.",
    ["kind"],
)
MAIL_FAILED = Counter(
    "keystile_mail_failed_total",
    "Failed delivery attempts, by reason: transient (retried later), permanent (dead at "
    "once), unavailable (SMTP unreachable: the message waits, the attempt does not count).",
    ["reason"],
)
MAIL_DEAD = Counter(
    "keystile_mail_dead_total",
    "Messages given up on (permanent refusal or outbox_max_attempts failures), by kind.",
    ["kind"],
)
MAIL_UNSENT = Gauge(
    "keystile_mail_unsent",
    "Messages in the outbox not yet sent nor dead (sampled by the senders).",
    multiprocess_mode="livemax",
)
MAIL_OLDEST_UNSENT_AGE = Gauge(
    "keystile_mail_oldest_unsent_age_seconds",
    "Age of the oldest message not yet sent nor dead; 0 when the outbox is drained.",
    multiprocess_mode="livemax",
)


def render() -> tuple[bytes, str]:
    """Return the exposition text and its content type, across workers if multiprocess."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE
    return generate_latest(REGISTRY), CONTENT_TYPE


def mark_process_dead(pid: int) -> None:
    """Drop a finished worker's live gauges, so sums count only live workers."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory or not Path(directory).is_dir():
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class _AsyncpgPool(Protocol):
    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...


class PoolSampler:
    """Copy pool occupancy into gauges every `interval` seconds.

    In multiprocess mode a scrape reads only what each worker wrote to its files,
    so pull-style collectors cannot work: each worker samples its own pools instead
    (the composition root calls `sample` every second with `keystile.tasks.run_every`).
    """

    def __init__(self, database_pool: _AsyncpgPool, redis: Any) -> None:
        self._database_pool = database_pool
        self._redis_pool = getattr(redis, "connection_pool", None)

    def sample(self) -> None:
        """Record the pools' current occupancy."""
        size = self._database_pool.get_size()
        idle = self._database_pool.get_idle_size()
        DB_POOL_CONNECTIONS.labels("in_use").set(size - idle)
        DB_POOL_CONNECTIONS.labels("idle").set(idle)
        # redis-py exposes no public counters; these attributes are the pool's own state.
        in_use = getattr(self._redis_pool, "_in_use_connections", ())
        available = getattr(self._redis_pool, "_available_connections", ())
        REDIS_POOL_CONNECTIONS.labels("in_use").set(len(in_use) if isinstance(in_use, Sized) else 0)
        REDIS_POOL_CONNECTIONS.labels("idle").set(
            len(available) if isinstance(available, Sized) else 0
        )


SECRET_KEY_FALLBACK_USED = Counter(
    "keystile_secret_key_fallback_used_total",
    "Checks that matched only under a previous secret key (secret_key_fallbacks), by"
    " purpose: session_cookie, csrf, refresh_token, api_key, client_secret, recovery_code,"
    " signing_key, totp_secret, mail_outbox. At zero for long enough, the fallbacks can go.",
    ["purpose"],
)
