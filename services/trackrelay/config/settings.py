"""Configuration for every trackrelay process, read from ``TRACKRELAY_*`` variables.

One pydantic-settings class per concern; command-line flags override the same
fields. ``trackrelay.cli.flags`` makes one flag per field with the field's docstring
as its help, so every field has one: its first sentence says what the field is, a
``None:`` or ``Off:`` sentence what no value or off means. Nothing here opens a
connection: the values are only resolved into the URLs the adapters need.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trackrelay.config.tls import check_redis_url, postgres_tls
from trackrelay.control.analytics_health import HealthQuery, PrometheusSpec
from trackrelay.control.controller import Spec
from trackrelay.control.shedding import MODES, Thresholds, parse_size
from trackrelay.events import MAX_SHARDS


def _checked_redis_url(value: str) -> str:
    check_redis_url(value)  # its TLS parameters can work (the files are read), one message
    return value


RedisUrl = Annotated[str, AfterValidator(_checked_redis_url)]
"""A Redis URL whose TLS parameters were checked when the settings were read."""

_CONFIG = SettingsConfigDict(
    env_prefix="TRACKRELAY_", extra="ignore", use_attribute_docstrings=True
)

START_WAIT = 60.0
"""Seconds a service waits at start for the stores it needs (``start_wait``)."""
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
QueueShards = Annotated[int, Field(ge=1, le=MAX_SHARDS)]
MIN_SHARD_QUOTA = 64 * 1024
"""The smallest share of the queue quota one shard may have: room for a stream node, two
windows' sketches and the flush that drains them, which every fold leaves free
(``queue.quota``; below it, a fold could never fit, and folded rows would wait for good)."""


class StoreSettings(BaseSettings):
    """Where the queue and the order store live."""

    model_config = _CONFIG

    redis_url: RedisUrl | None = None
    """Queue Redis URL; ``rediss://...?ssl_ca_certs=/path/ca.crt`` is TLS (the server's
    name checked; ``ssl_certfile``, ``ssl_keyfile``: a client certificate);
    ``redis+cluster://host:port`` (``rediss+cluster://``) a Redis Cluster, named by any
    of its nodes; ``redis+sentinel://host:port/service`` a primary found by Sentinel. None:
    trackrelay starts an embedded Redis of its own."""
    database_url: str | None = None
    """Order store: ``postgresql://...`` or ``sqlite:///path``. On PostgreSQL,
    ``?sslmode=verify-full&sslrootcert=/path/ca.crt`` is TLS with the server's name
    checked (``sslcert``, ``sslkey``: a client certificate). None: a SQLite file under
    ``data_dir``."""
    data_dir: Path = Path(".trackrelay")
    """Where embedded data lives: the SQLite file, the embedded Redis, local mode's logs."""
    start_wait: float = Field(default=START_WAIT, ge=0)
    """Seconds a service waits at start for its database to answer, trying again with a
    line of progress each time, before it exits saying why (0: one try). A fresh install
    starts every pod at once: waiting beats crash-looping."""

    @field_validator("redis_url", "database_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _database_tls(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(("postgres://", "postgresql")):
            postgres_tls(value)  # its checks (the files are read), one message
        return value

    def resolved_database_url(self) -> str:
        return resolve_database_url(self.database_url, self.data_dir)


_LEVELS = Thresholds()
SPEC_NAMES = {
    "increase": "budget_increase",
    "decrease": "budget_decrease",
    "in_use": "budget_in_use",
}
"""``ControllerSettings`` fields named apart from their ``Spec`` field (the rest match)."""
_SPEC = Spec()
"""The controller's defaults and bounds: ``ControllerSettings`` takes its own from here."""
_PROMETHEUS = PrometheusSpec("http://prometheus")
"""Prometheus' defaults (timeout, staleness, the queries when none are given)."""
PROMETHEUS_NAMES = {
    "address": "prometheus_url",
    "queries": "prometheus_queries",
    "timeout": "prometheus_timeout",
    "staleness": "prometheus_staleness",
}
"""``ControllerSettings`` fields by the ``PrometheusSpec`` field they set."""
FORWARDER_BATCH_SIZE = 500
FORWARDER_CONCURRENCY = 8


OUTBOX_ROW_BYTES = 64
"""Queue-quota bytes per outbox row of the derived outbox quota (16,384 rows a MiB): room
for the rows in transit while the relay catches up at full order speed, and for a few
queues' worth while Redis is unreachable, before the outbox guard sheds there."""
OUTBOX_MIN_ROWS = 1000


def derived_outbox_quota(queue_quota: int) -> int:
    """The outbox quota (rows) a queue quota implies when none is given: one place for
    local mode and the chart (``_helpers.tpl``, by test), so that with a queue quota the
    order database is never the unbounded overflow of a full or unreachable queue."""
    return max(OUTBOX_MIN_ROWS, queue_quota // OUTBOX_ROW_BYTES)


def read_ahead(replicas: int, concurrency: int, batch_size: int) -> int:
    """Stream entries the forwarders can hold at once (each lane one batch): the room the
    queue quota keeps for them. Local mode and the chart (``_helpers.tpl``, by test) agree."""
    return replicas * concurrency * batch_size


class RelaySettings(BaseSettings):
    """The outbox relay: batches, leases and retry pacing; the queue quota and shedding."""

    model_config = _CONFIG

    relay_batch_size: PositiveInt = 500
    """Outbox rows one relay round claims and moves to the stream."""
    relay_lease_seconds: PositiveFloat = 30.0
    """Seconds a relay's claim on outbox rows lasts; after it, another relay may take them."""
    relay_idle_seconds: PositiveFloat = 0.05
    """Seconds between relay rounds while the outbox holds less than a full batch, and no
    commit woke the relay (``relay_wakeups``)."""
    relay_wakeups: bool = True
    """Wake the relay as orders commit: a PostgreSQL notification (LISTEN/NOTIFY), or the
    order route of its own process; it still polls, every 0.25 s, for rows no commit
    announces. Off: the relay finds new rows by polling alone."""
    relay_backoff_base: PositiveFloat = 0.1
    """First wait (seconds) after a relay round fails on Redis or the database."""
    relay_backoff_max: PositiveFloat = 5.0
    """Longest wait (seconds) between relay rounds while Redis or the database fails."""
    queue_shards: QueueShards = 1
    """Shards of the queue: one stream each, spread over a Redis Cluster's nodes, every
    event in its order's shard. The queue keeps the highest count a relay or forwarder
    started with, and every process follows it: it is never lowered."""
    queue_replicas: int = Field(default=0, ge=0, le=16)
    """Replicas of the queue's Redis every batch must reach (Redis WAIT) before its outbox
    rows are deleted: a failover then loses no event the relay took from the outbox. One
    Redis or a Sentinel pair. Off (0): rows go once the primary has the batch."""
    queue_replica_timeout: PositiveFloat = 1.0
    """Seconds of one WAIT for the replicas; an unconfirmed batch is waited for again, its
    rows kept in the outbox meanwhile."""
    queue_replica_wait_max: PositiveFloat = 30.0
    """Seconds a batch waits for its replicas in all; past them its rows are deleted
    unconfirmed (counted in the relay's view, logged): a replica down must not stop
    delivery."""
    queue_quota: PositiveInt | None = None
    """Bytes the queue may use in Redis (over all its shards, an equal share each):
    ``64MiB``, ``512KiB`` or a plain number. None: no
    quota, no shedding at the stream."""
    live_configmap: str | None = None
    """ConfigMap (``namespace/name``) the operator writes the shedding policy to. It is
    watched through the API. None: the Redis key the local controller sets."""
    outbox_quota: PositiveInt | None = None
    """Outbox rows allowed to wait for the stream while Redis is down or full. None: one
    derived from the queue quota (``derived_outbox_quota``), or no limit without one."""
    _outbox_derived: bool = PrivateAttr(default=False)
    shedding: str = "auto"
    """How analytics data is thinned under the quotas. ``auto``: by pressure, with
    hysteresis; any other mode (none, sample, aggregate, evict, drop_new): always that one."""
    sample_p: float = Field(default=0.1, gt=0, le=1)
    """Keep probability of the fixed ``sample`` policy."""
    shed_sample_at: float = Field(default=_LEVELS.sample_at, gt=0, le=1)
    """Pressure (queue used / quota) at which the automatic mode starts sampling."""
    shed_aggregate_at: float = Field(default=_LEVELS.aggregate_at, gt=0, le=1)
    """Pressure at which the automatic mode aggregates events per SKU and window."""
    shed_evict_at: float = Field(default=_LEVELS.evict_at, gt=0, le=1)
    """Pressure at which the automatic mode evicts queued events to make room."""
    shed_hysteresis: float = Field(default=_LEVELS.hysteresis, ge=0, lt=1)
    """How far below a level's pressure the queue must fall for the automatic mode to
    leave that level."""
    shed_min_p: float = Field(default=_LEVELS.min_p, gt=0, le=1)
    """Lowest keep probability the automatic mode's sampling falls to."""
    aggregate_window: PositiveFloat = 5.0
    """Seconds of events one aggregation window folds into one event per SKU."""
    aggregate_flush_lag: PositiveInt = 1000
    """Closed windows are flushed into the stream while fewer events than this wait unread."""
    queue_read_ahead: int = Field(
        default=read_ahead(1, FORWARDER_CONCURRENCY, FORWARDER_BATCH_SIZE), ge=0
    )
    """Entries forwarders may hold at once, kept free under the quota. They are replicas x
    concurrency x batch size (``read_ahead``); Redis counts a pending entry at several times
    its size, so room is kept for them (0: none kept)."""
    quota_sample_interval: PositiveFloat = 0.1
    """Seconds between MEMORY USAGE samples of the queue. In between, its use is estimated
    from entry sizes."""
    outbox_check_interval: PositiveFloat = 0.25
    """Seconds between checks of the outbox against its quota."""

    @field_validator("queue_quota", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        if value in ("", None):
            return None
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("shedding")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in MODES:
            raise ValueError(f"shedding must be one of {', '.join(MODES)}")
        return value

    @model_validator(mode="after")
    def _levels(self) -> RelaySettings:
        self.thresholds()  # the same checks, one message
        if self.queue_quota is not None and self.queue_quota < MIN_SHARD_QUOTA * self.queue_shards:
            raise ValueError(
                f"queue_quota ({self.queue_quota} bytes) must give each of the "
                f"{self.queue_shards} shards at least {MIN_SHARD_QUOTA} bytes "
                f"({MIN_SHARD_QUOTA * self.queue_shards} in all)"
            )
        if self.outbox_quota is None and self.queue_quota is not None:
            self.outbox_quota = derived_outbox_quota(self.queue_quota)
            self._outbox_derived = True
        return self

    @property
    def outbox_quota_derived(self) -> bool:
        """Whether ``outbox_quota`` was derived from the queue quota (none was given)."""
        return self._outbox_derived

    def thresholds(self) -> Thresholds:
        return Thresholds(
            sample_at=self.shed_sample_at,
            aggregate_at=self.shed_aggregate_at,
            evict_at=self.shed_evict_at,
            hysteresis=self.shed_hysteresis,
            min_p=self.shed_min_p,
        )


class OrderSettings(StoreSettings, RelaySettings):
    """The order service (FastAPI) and the relay it runs in the background."""

    model_config = _CONFIG

    host: str = "127.0.0.1"
    """Address the order API listens on; ``0.0.0.0`` is every interface."""
    port: int = Field(default=8000, ge=0, le=65535)
    """Order API port."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of ``/metrics``, ``/docs`` and ``/openapi.json``, which the API port then no
    longer serves (it keeps the orders and the health probes). None: all on the API port."""
    max_items: PositiveInt = 100
    """Most lines one order may have; more are answered 422."""
    workers: PositiveInt = 1
    """Request-serving processes; with more than one, the relay runs in its own process."""
    db_pool_size: PositiveInt = 20
    """Connections for order writes: on PostgreSQL, the raw insert pool."""
    max_body_bytes: PositiveInt = 64 * 1024
    """Largest order request body in bytes; a larger one is answered 413."""
    run_relay: bool = True
    """Run the outbox relay in the order service's process. Off: run ``trackrelay relay``
    apart."""
    migrate_on_start: bool = True
    """Apply the store's migrations at start. Off: run ``trackrelay migrate`` first."""


def resolve_database_url(url: str | None, data_dir: Path) -> str:
    """Turn a user-facing database URL into the async SQLAlchemy URL we drive.

    ``postgresql://`` and ``postgres://`` become ``postgresql+asyncpg://``,
    ``sqlite:///`` becomes ``sqlite+aiosqlite:///``; None is a SQLite file in
    ``data_dir``.
    """
    if url is None:
        return f"sqlite+aiosqlite:///{(data_dir / 'trackrelay.db').as_posix()}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ValueError(f"unsupported database URL {url!r}: use postgresql://... or sqlite:///path")


class ForwarderSettings(BaseSettings):
    """A forwarder: reads the stream through the consumer group, pushes to analytics."""

    model_config = _CONFIG

    start_wait: float = Field(default=START_WAIT, ge=0)
    """Seconds the forwarder waits at start for the queue's Redis to answer, trying again
    with a line of progress each time, before it exits saying why (0: one try)."""
    redis_url: RedisUrl | None = None
    """Queue Redis URL: the stream the forwarder reads (``rediss://`` for TLS,
    ``redis+cluster://`` for a Redis Cluster, as the order service's). None: refused at
    start."""
    analytics_url: str | None = None
    """Analytics base URL the forwarder pushes to, at ``/v1/track``. None: refused at start."""
    queue_shards: QueueShards = 1
    """Shards of the queue, read by every forwarder (each reads them all, the consumer
    groups share the entries out). The queue keeps the highest count a relay or forwarder
    started with, and every process follows it: it is never lowered."""
    batch_size: PositiveInt = FORWARDER_BATCH_SIZE
    """Most events in one push."""
    concurrency: PositiveInt = FORWARDER_CONCURRENCY
    """Lanes: at most this many pushes in flight per process. Adaptive delivery
    keeps the window within ``concurrency * batch_size`` events; without it, every
    lane pushes full batches (fixed concurrency)."""
    adaptive: bool = True
    """Adapt the window to analytics' answers and latency (AIMD), with a circuit breaker
    and a retry allowance. Off: fixed concurrency, per-batch backoff only."""
    push_latency_limit: PositiveFloat | None = None
    """Seconds a push may take before it counts as congestion. The window, and so the
    batch size, shrinks until one push fits. None: only the learned latency band."""
    breaker_threshold: PositiveInt = 5
    """Consecutive failed pushes that open the circuit breaker."""
    breaker_open_base: PositiveFloat = 0.5
    """First wait (seconds) before a probe once the circuit breaker opens."""
    breaker_open_max: PositiveFloat = 2.0
    """Longest wait (seconds) between probes while analytics is down."""
    retry_ratio: float = Field(default=0.2, ge=0, le=1)
    """Retries allowed per first attempt (the retry allowance), over a reserve of 10."""
    budget_tolerance: float = Field(default=0.01, gt=0, le=1)
    """Share of a second's shared budget that one push may carry at least. A push may carry
    more when the lanes need it to deliver the whole budget at analytics' latency
    (``budget * latency / concurrency``), so a small budget at a slow analytics stays
    usable. Any one-second window stays within the budget plus one push at the
    reservations' clock (network and scheduling jitter add about as much again)."""
    honor_retry_after: bool = True
    """Wait as long as a 429 or 503 answer's ``Retry-After`` asks. Off: retry on the
    forwarder's own backoff, a benchmark baseline."""
    stats_interval: PositiveFloat = 1.0
    """Seconds between the views the forwarder publishes to Redis; each expires after 5."""
    block_ms: PositiveInt = 1000
    """Milliseconds one stream read waits for new entries; less than ``redis_timeout``."""
    push_timeout: PositiveFloat = 5.0
    """Hard deadline (seconds) of one push, counted from the ownership check before it."""
    claim_idle: PositiveFloat = 30.0
    """Idle time (seconds) after which another forwarder may take an entry over."""
    claim_interval: PositiveFloat = 5.0
    """Seconds between looks for entries other forwarders left idle."""
    redis_timeout: PositiveFloat = 5.0
    """Socket timeout (seconds) of every Redis command; a half-open connection fails
    within it."""
    max_deliveries: PositiveInt = 10
    """Deliveries of one entry after which it goes to the dead-letter stream."""
    split_after: PositiveInt = 3
    """Failures (5xx, timeouts) of one batch, while analytics accepts others, before it is split."""
    max_batch_bytes: PositiveInt | None = None
    """Body size limit (bytes) for one push. None: learned from analytics' 413 answers."""
    consumer_name: str | None = None
    """The forwarder's name in the consumer group. None: the pod's or host's name and pid."""
    live_configmap: str | None = None
    """ConfigMap (``namespace/name``) the operator writes the budget to. It is watched
    through the API. None: the Redis key that ``trackrelay budget`` and the local
    controller set."""
    host: str = "127.0.0.1"
    """Address of the health and metrics endpoint."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of ``/healthz``, ``/readyz`` and ``/metrics``. None: not served."""
    backoff_base: PositiveFloat = 0.2
    """First wait (seconds) before a failed batch is pushed again."""
    backoff_max: PositiveFloat = 10.0
    """Longest wait (seconds) between pushes of a failed batch."""
    shutdown_grace: PositiveFloat = 10.0
    """Seconds the pushes in flight have to finish after SIGTERM."""

    @property
    def refresh_every(self) -> float:
        """How often a batch waiting to be retried re-checks (and renews) its ownership."""
        return self.claim_idle / 4

    @property
    def max_hold_gap(self) -> float:
        """The longest a held batch can go without an ownership refresh.

        A push ends by ``push_timeout`` after its check; the Redis writes that
        follow it end within ``redis_timeout``; a retry wait renews every
        ``refresh_every``.
        """
        return self.push_timeout + self.redis_timeout + self.refresh_every

    @model_validator(mode="after")
    def _ownership_timing(self) -> ForwarderSettings:
        if self.max_hold_gap >= self.claim_idle:
            raise ValueError(
                f"claim_idle ({self.claim_idle:g}s) must exceed push_timeout "
                f"({self.push_timeout:g}s) + redis_timeout ({self.redis_timeout:g}s) + "
                f"claim_idle/4 ({self.refresh_every:g}s) = {self.max_hold_gap:g}s: otherwise "
                "a live forwarder's batch could be taken over while it still holds it"
            )
        if self.breaker_open_base > self.breaker_open_max:
            raise ValueError(
                f"breaker_open_base ({self.breaker_open_base:g}s) must not exceed "
                f"breaker_open_max ({self.breaker_open_max:g}s)"
            )
        if self.block_ms / 1000 >= self.redis_timeout:
            raise ValueError(
                f"block_ms ({self.block_ms}) must be shorter than redis_timeout "
                f"({self.redis_timeout:g}s): a blocking read would time out"
            )
        return self


class SimulatorSettings(BaseSettings):
    """The analytics simulator (a product feature for demos, tests and benchmarks)."""

    model_config = _CONFIG

    sim_host: str = "127.0.0.1"
    """Address the simulator listens on."""
    sim_port: int = Field(default=8100, ge=0, le=65535)
    """Simulator port."""
    sim_rate: float = Field(default=0.0, ge=0)
    """Events per second it can serve; 0 means unlimited."""
    sim_overhead: float = Field(default=0.0, ge=0)
    """Fixed seconds of work per request."""
    sim_queue_limit: PositiveFloat = 5000.0
    """Events of queued work past which it answers 429."""
    sim_collapse: bool = False
    """Goodput falls when overloaded, as real services do."""
    sim_max_body_bytes: int = Field(default=0, ge=0)
    """Bodies larger than this are answered 413; 0 means no limit."""
    sim_scenario: Path | None = None
    """JSON or YAML file of timed phases (faults, capacity). None: steady as configured."""
    sim_seed: int = 0
    """Seed of the simulator's random choices (faults, latencies)."""
    sim_admin: bool = True
    """Serve ``/admin`` (faults, scenarios, capacity for tests and demos). Off: those
    routes do not exist (404)."""
    sim_journal: Path | None = None
    """File that keeps accepted events across restarts. Every accepted event (id, SKU,
    qty x weight, lines) is appended and replayed at start, so counts and duplicate detection
    survive a restart, as a real analytics store's would. None: memory only."""


def sqlite_file(database_url: str) -> Path | None:
    """The file a SQLite URL names; None for in-memory databases and other stores."""
    if not database_url.startswith("sqlite") or ":///" not in database_url:
        return None
    path = database_url.split(":///", 1)[1].split("?", 1)[0]
    if not path or path == ":memory:" or "mode=memory" in database_url:
        return None
    return Path(path)


class ControllerSettings(BaseSettings):
    """The controller in local mode (``trackrelay up``): ``TRACKRELAY_CONTROL_*``.

    The operator reads the same fields from the AnalyticsPipeline's spec instead.
    """

    model_config = SettingsConfigDict(
        env_prefix="TRACKRELAY_CONTROL_", extra="ignore", use_attribute_docstrings=True
    )

    enabled: bool = True
    """Run the controller. Off: the forwarders run at the count given, with no budget."""
    interval: PositiveFloat = 1.0
    """Seconds between observe -> decide -> act ticks."""
    budget_min: float = _SPEC.budget_min
    """Lowest rate budget (events/s)."""
    budget_max: float = _SPEC.budget_max
    """Highest rate budget (events/s)."""
    budget_initial: float = _SPEC.budget_initial
    """Rate budget (events/s) at start."""
    budget_increase: float = _SPEC.increase
    """Factor the budget grows by on a healthy tick with backlog, above the last good rate."""
    budget_decrease: float = _SPEC.decrease
    """On congestion the budget is cut to this share of the rate delivered (once per episode)."""
    budget_in_use: float = _SPEC.in_use
    """The budget grows only while forwarders deliver at least this share of it."""
    p99_target: float = _SPEC.p99_target
    """Push p99 (seconds) at or below which latency is never congestion; above it, pushes
    queued at analytics are (a latency our rate does not drive is not)."""
    max_error_share: float = _SPEC.max_error_share
    """Share of pushes answered 429/503 or timed out (congestion), or failed otherwise
    (analytics failing), beyond which the controller acts."""
    replicas_min: int = _SPEC.replicas_min
    """Fewest forwarders the controller runs."""
    replicas_max: int = _SPEC.replicas_max
    """Most forwarders the controller runs."""
    scale_up_window: float = _SPEC.scale_up_window
    """Seconds a scale-up must be wanted before it happens."""
    scale_down_window: float = _SPEC.scale_down_window
    """Seconds a scale-down must be wanted before it happens."""
    drain_seconds: float = _SPEC.drain_seconds
    """Seconds the backlog should take to deliver, when the budget allows."""
    replica_rate: float = _SPEC.replica_rate
    """Events/s one forwarder is assumed to deliver until it has been measured."""
    health_url: str | None = None
    """Analytics health URL probed every tick. None: no probe."""
    prometheus_url: str | None = None
    """Prometheus base URL whose queries judge analytics' health every tick. None: no
    Prometheus; the controller judges by the forwarders' measurements and the probe."""
    prometheus_queries: list[str] = Field(default_factory=list)
    """A query that judges analytics' health, ``NAME[MIN,MAX]=PROMQL``. MIN or MAX may be
    empty (no bound there); analytics is healthy while every query returns values within
    its range. Empty: with a Prometheus URL, the simulator's
    queries (p99 <= 0.5 s, 429 and 5xx share <= 5 %, queued work <= 0.5 s)."""
    prometheus_timeout: float = _PROMETHEUS.timeout
    """Seconds one Prometheus query may take; past it, that query reads as unknown."""
    prometheus_staleness: float = _PROMETHEUS.staleness
    """Seconds an unknown Prometheus verdict holds the last decision before the controller
    turns conservative."""

    @field_validator("prometheus_url", mode="before")
    @classmethod
    def _no_url(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _valid(self) -> ControllerSettings:
        problems = self.spec().problems(SPEC_NAMES)
        if problems:
            raise ValueError("; ".join(f"control {p}" for p in problems))
        self.prometheus_spec()  # its checks, one message
        return self

    def prometheus_spec(self) -> PrometheusSpec | None:
        """What ``prometheus_*`` describe (None: no URL); ``ValueError`` naming each problem."""
        if self.prometheus_url is None:
            given = [
                name
                for name, value in (
                    ("prometheus_queries", self.prometheus_queries != []),
                    ("prometheus_timeout", self.prometheus_timeout != _PROMETHEUS.timeout),
                    ("prometheus_staleness", self.prometheus_staleness != _PROMETHEUS.staleness),
                )
                if value
            ]
            if given:
                raise ValueError(f"{', '.join(given)}: given without prometheus_url")
            return None
        queries: list[HealthQuery] = []
        for n, text in enumerate(self.prometheus_queries):
            try:
                queries.append(HealthQuery.parse(text))
            except ValueError as exc:
                raise ValueError(f"prometheus_queries[{n}]: {exc}") from None
        spec = PrometheusSpec(
            self.prometheus_url,
            queries=tuple(queries) if queries else _PROMETHEUS.queries,
            timeout=self.prometheus_timeout,
            staleness=self.prometheus_staleness,
        )
        problems = spec.problems(PROMETHEUS_NAMES)
        if problems:
            raise ValueError("; ".join(problems))
        return spec

    def spec(self, relay: RelaySettings | None = None) -> Spec:
        """The controller's spec, with the shedding mode and thresholds the relay uses
        (``relay`` None: the spec's own shedding defaults)."""
        fields = type(self).model_fields
        given: dict[str, Any] = {
            attr: getattr(self, SPEC_NAMES.get(attr, attr))
            for attr in Spec.__dataclass_fields__
            if SPEC_NAMES.get(attr, attr) in fields
        }
        spec = Spec(**given)
        if relay is None:
            return spec
        return replace(
            spec, shedding=relay.shedding, sample_p=relay.sample_p, thresholds=relay.thresholds()
        )
