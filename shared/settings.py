"""The one typed settings object, read from the environment (12-factor).

Every variable is documented in the README; defaults are the contract's numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.pagination import DEFAULT_PAGE_SIZE
from shared.rules import Limits

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Infrastructure. Unset means "start an embedded server" for `filecdn run`; the
    # long-running processes (api, worker, edge) require them.
    database_url: str | None = None
    # redis://[user:password@]host:port/db; rediss:// for TLS. Every Redis URL below too.
    redis_url: str | None = None
    # The CA bundle that signs the Redis servers' certificates (rediss://); unset: the system's.
    redis_tls_ca_file: Path | None = None
    # The token cache's own Redis (a cluster, or a primary with replicas); unset: REDIS_URL.
    # Edges reading replicas point theirs at a replica; the API and worker at the primary.
    token_redis_url: str | None = None
    # `cluster`: TOKEN_REDIS_URL names a node of a Redis Cluster (see shared/token_cache.py).
    token_redis_mode: Literal["standalone", "cluster"] = "standalone"
    # Replicas every token-cache write waits for (WAIT) before the API answers: those the
    # edges read. Unconfirmed within the timeout (seconds): the write fails (503).
    token_redis_wait_replicas: int = Field(default=0, ge=0)
    token_redis_wait_timeout: float = Field(default=1.0, gt=0)
    s3_endpoint: str | None = None  # http(s)://host:port
    s3_access_key: str = "filecdn"
    s3_secret_key: SecretStr = SecretStr("filecdn-local-secret")
    s3_bucket: str = "filecdn"
    s3_region: str = "us-east-1"
    # API and worker: seconds to connect to S3, and for S3 to answer (and between two chunks
    # of a body). A hung or refusing S3 then fails a request (503) within about that long.
    # The edge has its own, EDGE_S3_TIMEOUT.
    s3_connect_timeout: float = Field(default=2.0, gt=0)
    s3_read_timeout: float = Field(default=5.0, gt=0)

    # Listening addresses.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    grpc_port: int = 50051
    edge_host: str = "127.0.0.1"
    edge_port: int = 8080
    edge_workers: int = Field(default=2, ge=1)
    # Private ops listeners (metrics, health, the dashboard): never on the serving ports.
    # 127.0.0.1 by default; in Kubernetes OPS_HOST=0.0.0.0 behind a NetworkPolicy.
    ops_host: str = "127.0.0.1"
    ops_port: int = 8090  # API: dashboard, /api/..., /metrics, /healthz, /readyz
    edge_ops_port: int = 8091  # edge: /metrics summed over its workers, /healthz, /readyz
    worker_ops_port: int = 8093  # worker: /metrics, /healthz (a per-process heartbeat)
    public_base_url: str | None = None  # where the edge is reachable; see edge_base_url
    data_dir: Path = Path(".filecdn")

    # Contract limits (files-api.md); lowered in tests so expiry runs in seconds.
    max_upload_bytes: int = Field(default=50 * MiB, gt=0)
    public_url_max_bytes: int = Field(default=50 * MiB, gt=0)
    expires_after_min: int = Field(default=3600, ge=1)
    expires_after_max: int = Field(default=2_592_000, ge=1)
    public_url_quota: int = Field(default=1000, ge=0)
    list_limit_max: int = DEFAULT_PAGE_SIZE

    # Bounded cost per request (README "Bounded cost per request"). Uploads in progress at
    # once, per team and per API process: past either, 429 with Retry-After.
    uploads_per_team: int = Field(default=16, ge=1)
    uploads_per_process: int = Field(default=256, ge=1)
    # Bytes every upload of the process may hold in memory together (buffered parts and
    # parts on their way to S3). Buffers grow as bytes arrive; a writer that cannot get
    # memory waits (its socket is not read) up to upload_memory_wait seconds, then 503.
    upload_memory_budget_bytes: int = Field(default=256 * MiB, ge=16 * MiB)
    upload_memory_wait: float = Field(default=10.0, gt=0)
    # A request body (REST multipart, gRPC upload stream) that sends nothing for
    # upload_idle_timeout seconds, or is not complete after upload_body_timeout: 408 /
    # DEADLINE_EXCEEDED, and nothing is kept.
    upload_idle_timeout: float = Field(default=30.0, gt=0)
    upload_body_timeout: float = Field(default=600.0, gt=0)
    # An idle keep-alive connection is closed after this; so is one whose request line and
    # headers have not all arrived within it (aiohttp's keep-alive timer covers both).
    api_keepalive_timeout: float = Field(default=15.0, gt=0)
    # gRPC: RPCs served at once (more are refused RESOURCE_EXHAUSTED by grpc itself), and
    # the largest message either way: the SDK's 3 MiB chunks and upstream's "up to 5 MB".
    grpc_max_concurrent_rpcs: int = Field(default=256, ge=1)
    grpc_max_message_bytes: int = Field(default=6 * MiB, ge=4 * MiB)
    # PostgreSQL, in the API: a statement running longer is cancelled by the server (503;
    # below DB_TIMEOUT, so the server frees the backend before the client gives up on it); a
    # request that waits longer for a pool connection gets 503 with Retry-After.
    db_statement_timeout: float = Field(default=3.0, gt=0)
    db_acquire_timeout: float = Field(default=5.0, gt=0)

    # Signs pagination tokens; every API replica must share it.
    pagination_secret: SecretStr | None = None

    # Worker.
    reconcile_interval: float = Field(default=30.0, gt=0)
    event_claim_idle_ms: int = Field(default=30_000, gt=0)
    arq_queue_name: str = "filecdn:queue"
    # An object with no row is swept only once older than this (an upload in progress
    # has no row yet).
    sweep_grace_seconds: int = Field(default=3600, ge=1)
    # Listing the whole bucket is heavy: the orphan sweep runs at start, then this often.
    sweep_interval_seconds: int = Field(default=3600, ge=1)
    # A worker whose job poll loop, event consumer, reconcile loop or link-stats fold has not
    # come round for this long fails its /healthz (liveness): stuck, and a restart cures it.
    worker_stall_seconds: float = Field(default=120.0, gt=0)

    # Audit trail and per-link stats (the worker folds the edges' counts and sweeps).
    audit_retention_days: int = Field(default=365, ge=1)
    link_stats_retention_days: int = Field(default=8, ge=1)  # per-minute rollups only
    link_stats_fold_interval: float = Field(default=1.0, gt=0)

    # Edge.
    edge_cache_control: str = "public, no-cache"
    edge_memory_cache_bytes: int = 64 * MiB
    edge_memory_cache_object_max: int = 256 * 1024
    edge_disk_cache_bytes: int = 1024 * MiB
    edge_disk_cache_dir: Path | None = None
    # Objects above the memory cache's object bound are cached in fixed slices (ranged S3
    # GETs of this many bytes, fetched when a request needs them); each process keeps its
    # most recently used slices in memory up to edge_slice_memory_bytes.
    edge_slice_bytes: int = Field(default=1 * MiB, ge=64 * 1024)
    edge_slice_memory_bytes: int = Field(default=32 * MiB, ge=0)
    edge_s3_timeout: float = Field(default=10.0, gt=0)
    edge_redis_timeout: float = Field(default=2.0, gt=0)
    edge_metrics: bool = True  # per-minute counters in Redis, written once a second
    edge_link_stats: bool = True  # hits and bytes per token, to Redis once a second
    # SIGTERM: keep serving this long while /readyz answers 503 (load balancers notice), then
    # close the listener and give responses under way edge_drain_timeout to finish.
    edge_drain_delay: float = Field(default=5.0, ge=0)
    edge_drain_timeout: float = Field(default=10.0, gt=0)
    edge_access_log: bool = False  # one JSON line per request (tokens shortened to 4 chars)
    edge_keepalive_timeout: float = Field(default=75.0, gt=0)
    # uvloop serves faster (see the README's benchmarks); asyncio's own loop is the fallback.
    edge_event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # Operations.
    redis_timeout: float = Field(default=5.0, gt=0)  # a hung Redis fails requests (503)
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"
    # API: seconds for a statement's answer (and then for its cancellation, which the
    # connection waits for before it is reused); every process: seconds to connect to
    # PostgreSQL. A hung server fails a request (503) within about twice DB_TIMEOUT.
    db_timeout: float = Field(default=4.0, gt=0)
    db_connect_timeout: float = Field(default=2.0, gt=0)
    db_pool_min: int = 2
    db_pool_max: int = 20
    s3_threads: int = 16
    metrics_retention_seconds: int = 7 * 24 * 3600

    @model_validator(mode="after")
    def _check_ranges(self) -> Settings:
        if self.expires_after_min > self.expires_after_max:
            raise ValueError("EXPIRES_AFTER_MIN must not exceed EXPIRES_AFTER_MAX")
        if self.token_redis_wait_replicas and self.token_redis_mode == "cluster":
            raise ValueError(
                "TOKEN_REDIS_WAIT_REPLICAS applies to a primary whose replicas edges read;"
                " a cluster's edges read its primaries"
            )
        if self.token_redis_wait_replicas and self.token_redis_wait_timeout >= self.redis_timeout:
            # The client would give up on the connection before WAIT answers.
            raise ValueError("TOKEN_REDIS_WAIT_TIMEOUT must be below REDIS_TIMEOUT")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from an explicit environment mapping instead of os.environ."""
        fields = cls.model_fields
        return cls.model_validate({k.lower(): v for k, v in env.items() if k.lower() in fields})

    @property
    def limits(self) -> Limits:
        """The numbers the pure rules (`shared/rules.py`) need."""
        return Limits(
            max_upload_bytes=self.max_upload_bytes,
            public_url_max_bytes=self.public_url_max_bytes,
            expires_after_min=self.expires_after_min,
            expires_after_max=self.expires_after_max,
            public_url_quota=self.public_url_quota,
            list_limit_max=self.list_limit_max,
        )

    @property
    def edge_base_url(self) -> str:
        """PUBLIC_BASE_URL, defaulting to the local edge."""
        return (self.public_base_url or f"http://127.0.0.1:{self.edge_port}").rstrip("/")

    @property
    def edge_cache_dir(self) -> Path:
        return self.edge_disk_cache_dir or self.data_dir / "edge-cache"
