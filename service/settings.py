"""One typed Settings object: ``vigil.yaml`` (path from ``VIGIL_CONFIG``) overridden by env.

Priority, highest first: init arguments, ``VIGIL_<SECTION>__<KEY>`` environment variables,
the YAML file, the defaults below. ``VIGIL_DATA_DIR`` (default ``var/``) roots every path
that is not given explicitly: the SQLite store, the prediction log, the BentoML model store.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from service.settings_cluster import ClusterLogSettings, cluster_problem, replica_id_default
from service.settings_monitoring import (
    DriftSettings,
    KpiSettings,
    MonitorSettings,
    PolicySettings,
    Section,
    WebhookSettings,
)
from service.settings_security import (
    LogEncryptionSettings,
    TlsSettings,
    check_key,
)

Role = Literal["client", "feedback", "viewer", "operator", "admin"]


class ServerSettings(Section):
    workers: int = Field(2, ge=1, le=64, description="Gateway worker processes (each its own "
                         "ONNX sessions, log writer and routing table); read at import by "
                         "`@bentoml.service`.")
    port: int = Field(3000, description="Informational: the port is `bentoml serve --port` "
                      "(`make serve PORT=...`).")
    host: str = Field("0.0.0.0", description="Informational: the address is `bentoml serve "
                      "--host`.")
    demo: bool = Field(True, description="Register the demo models and their deployment into "
                       "an empty store at start.")
    request_timeout_seconds: float = Field(30.0, gt=0, description="BentoML's per-request "
                                           "timeout (`traffic.timeout`).")
    latency_objective_seconds: float = Field(0.1, gt=0, description="The latency objective: "
                                             "`vigil_request_duration_seconds` has a bucket "
                                             "here, for the burn-rate alert.")
    # freeze start-up objects out of the garbage collector and collect less often: fewer
    # long pauses in the slowest requests (measured in load_tests/bench.py)
    gc_tuning: bool = Field(True, description="`gc.freeze()` after start-up and a 50k young "
                            "generation in every worker and the Monitor.")
    # BentoML's OpenTelemetry middleware opens a span per request even with no exporter: a
    # quarter of a /v2 worker's CPU (py-spy). Off unless an operator wants the spans (and
    # configures BentoML's tracing exporter); Prometheus metrics are unaffected.
    tracing: bool = Field(False, description="BentoML's per-request OpenTelemetry spans (set "
                          "true and configure BentoML's exporter to keep them).")
    drain_seconds: float = Field(3.0, ge=0, le=300, description="On SIGTERM, answer readiness "
                                 "503 but keep serving this long before stopping "
                                 "(service/drain.py).")
    base_url: str = Field("http://127.0.0.1:3000", description="How clients reach this "
                          "gateway: sent as `gateway` in webhook events.")
    replica_id: str = Field(default_factory=replica_id_default, min_length=1, max_length=128,
                            description="This replica's name in `/admin/cluster`, the "
                            "metrics and the leases (default: the host name). Setting it "
                            "declares several replicas: it needs PostgreSQL and "
                            "`log.backend: nats`.")
    tls: TlsSettings = Field(TlsSettings(), description="HTTPS on the Gateway's port, and "
                             "optionally client certificates (docs/security.md).")


class LimitsSettings(Section):
    max_rows: int = Field(1000, ge=1, description="Rows per prediction request; above: 413.")
    max_feedback_items: int = Field(1000, ge=1, description="Items per `POST /feedback` "
                                    "batch; above: the batch is refused (422).")
    max_concurrency: int = Field(256, ge=1, description="Inference requests in flight per "
                                 "worker; above: 503 with `Retry-After: 1`.")
    max_header_bytes: int = Field(16384, ge=1024, description="Request headers, in bytes; "
                                  "above: 431 (any route).")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="An inference or "
                                "feedback body, in bytes; above: 413, before the body is "
                                "read when Content-Length declares it.")
    # parsing a JSON body takes several times its size, so this bounds a flood's memory
    max_inflight_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Request "
                                         "bodies in flight per worker (by Content-Length) "
                                         "before inference answers 503 with `Retry-After`.")
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="A model "
                                  "registration upload (ONNX file, card, reference rows).")


class StoreSettings(Section):
    url: str | None = Field(None, description="SQLAlchemy URL of the store; default "
                            "`sqlite:///{data_dir}/vigil.db`, or "
                            "`postgresql+psycopg://user@host/db`.")
    deployment_poll_seconds: float = Field(0.5, gt=0, description="How often every worker "
                                           "re-reads the deployments' revisions (the worker "
                                           "that made a change applies it at once).")
    busy_timeout_seconds: float = Field(30.0, gt=0, description="How long a statement waits "
                                        "for a locked SQLite store (or a pooled connection) "
                                        "before the admin API answers 503 with Retry-After "
                                        "and the Monitor retries its tick.")


class LogSettings(ClusterLogSettings):
    enabled: bool = Field(True, description="Write the prediction log (without it: no "
                          "Monitor statistics, drift, shadows or feedback joins).")
    dir: str | None = Field(None, description="The prediction log's directory; default "
                            "`{data_dir}/log`.")
    queue_size: int = Field(10_000, ge=1, description="Records waiting for a worker's writer "
                            "thread; full: the newest is dropped and counted.")
    fsync_seconds: float = Field(0.5, gt=0, description="How often the writer fsyncs: the "
                                 "loss window on a machine crash.")
    segment_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="A segment rotates "
                                   "(`.open` → `.jsonl`) past this size.")
    segment_max_seconds: float = Field(3600.0, gt=0, description="A segment rotates after "
                                       "this long.")
    retention_hours: float = Field(72.0, gt=0, description="Consumed segments older than this "
                                   "are deleted by the Monitor; on `nats`, the stream Vigil "
                                   "creates keeps records this long, read or not.")
    retention_max_bytes: int = Field(2 * 1024**3, ge=1024 * 1024, description="Hard cap on "
                                     "the log directory (and on each worker's NATS spill): "
                                     "writers drop (counted) above it and `/feedback` answers "
                                     "503; the Monitor keeps consumed segments under half of it.")
    sample: dict[Literal["champion", "canary", "shadow", "explicit"],
                 Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        {}, description="Share of each variant's predictions written to the log, e.g. "
        "`{shadow: 0.1}` (default 1.0 each; feedback is never sampled). Shadows run only on "
        "logged requests.")

    encryption: LogEncryptionSettings = Field(LogEncryptionSettings(), description="The log "
                                              "encrypted at rest (docs/security.md).")
    hash_key: SecretStr | None = Field(None, description="HMAC-SHA256 key (32 random bytes, "
                                       "standard base64) for inputs a card marks `pii: hash` "
                                       "and for routing keys; unset: those values are dropped, "
                                       "never written in clear.")
    hash_routing_keys: bool = Field(False, description="Write request ids into the log as their "
                                    "keyed hash, in predictions and labels alike so they still "
                                    "join (needs `hash_key`); routing keys themselves are never "
                                    "logged.")

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, v: SecretStr | None) -> SecretStr | None:
        return check_key(v, "log.hash_key")

    @model_validator(mode="after")
    def _hash_ids_need_key(self) -> LogSettings:
        if self.hash_routing_keys and self.hash_key is None:
            raise ValueError("log.hash_routing_keys needs log.hash_key")
        return self

    def sample_rate(self, variant: str) -> float:
        return self.sample.get(variant, 1.0)  # type: ignore[call-overload]


class ShadowSettings(Section):
    """Shadows run in the Monitor, on the logged records of the requests routed to them."""

    queue_size: int = Field(10_000, ge=1, description="Requests waiting for one shadow; full: "
                            "dropped and counted.")
    timeout_seconds: float = Field(1.0, gt=0, description="A shadow call's time limit, less "
                                   "what its thread waited for a CPU (a starved Monitor is "
                                   "late, not hung).")
    breaker_failures: int = Field(5, ge=1, description="Consecutive failures or timeouts that "
                                  "open a shadow's circuit breaker.")
    breaker_reset_seconds: float = Field(30.0, gt=0, description="How long an open breaker "
                                         "sheds before trying the shadow again.")
    max_batch_rows: int = Field(4096, ge=1, description="Rows a shadow lane runs in one call "
                                "at most.")


class TokenSettings(Section):
    name: str = Field(description="The name the audit records (never the token).")
    role: Role = Field(description="`client`, `feedback`, `viewer`, `operator` or `admin` "
                       "(each role includes the ones before it).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the token.")


class AuthSettings(Section):
    inference: Literal["open", "required"] = Field("open", description="`required`: "
                                                   "predictions need a token of role "
                                                   "`client` or above.")
    feedback: Literal["open", "required"] = Field("required", description="`required`: "
                                                  "`/feedback` needs a token of role "
                                                  "`feedback` or above.")
    tokens: list[TokenSettings] = Field([], description="The bearer tokens, as SHA-256 hashes.")
    bootstrap_admin_token: str | None = Field(None, description="A plain admin token (name "
                                              "`bootstrap`), usually from "
                                              "`VIGIL_BOOTSTRAP_ADMIN_TOKEN`; `make serve` "
                                              "sets it from `var/admin-token`.")


class Settings(BaseSettings):
    """Everything Vigil reads from its configuration (the keys: docs/configuration.md)."""

    model_config = SettingsConfigDict(
        env_prefix="VIGIL_", env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    data_dir: Path = Field(Path("var"), description="Roots every path not given explicitly: "
                           "the SQLite store, the prediction log, the BentoML model "
                           "store.")
    server: ServerSettings = Field(ServerSettings(), description="The Gateway service.")
    limits: LimitsSettings = Field(LimitsSettings(), description="What one request may ask.")
    store: StoreSettings = Field(StoreSettings(), description="The SQL store: deployments, "
                                 "audit and the Monitor's state.")
    log: LogSettings = Field(LogSettings(), description="The prediction log each worker "
                             "writes.")
    shadows: ShadowSettings = Field(ShadowSettings(), description="Shadow lanes, run by the "
                                    "Monitor on the logged records of the requests routed to "
                                    "them.")
    monitor: MonitorSettings = Field(MonitorSettings(), description="The Monitor process.")
    drift: DriftSettings = Field(DriftSettings(), description="Streaming drift detection in "
                                 "the Monitor.")
    policies: dict[str, PolicySettings] = Field({}, description="Retraining trigger policies, "
                                                "per model name.")
    kpis: dict[str, list[KpiSettings]] = Field({}, description="Business KPIs per model name, "
                                               "sent with `/feedback` and tested by "
                                               "experiments (docs/experiments.md).")
    rollouts: dict[str, Any] = Field({}, description="Accepted and not read: a rollout's "
                                     "steps and gates come with `POST /admin/rollouts/{model}`.")
    webhooks: WebhookSettings = Field(WebhookSettings(), description="Retraining and rollout "
                                      "webhooks.")
    auth: AuthSettings = Field(AuthSettings(), description="Bearer tokens and which routes "
                               "need one.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = os.environ.get("VIGIL_CONFIG", "vigil.yaml")
        if Path(config_path).is_file():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_path))
        return tuple(sources)

    @model_validator(mode="after")
    def _one_truth(self) -> Settings:
        problem = cluster_problem("replica_id" in self.server.model_fields_set,
                                  self.store_url, self.log.backend)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_dir.resolve() / 'vigil.db'}"

    @property
    def log_dir(self) -> Path:
        return Path(self.log.dir) if self.log.dir else self.data_dir / "log"

    @property
    def bentoml_home(self) -> Path:
        return self.data_dir / "bentoml"


def load_settings(**overrides: Any) -> Settings:
    """Build the Settings once per process; ``overrides`` win over every source."""
    settings = Settings(**overrides)
    token = os.environ.get("VIGIL_BOOTSTRAP_ADMIN_TOKEN")
    if token and not settings.auth.bootstrap_admin_token:
        settings.auth.bootstrap_admin_token = token
    return settings


def problems(exc: Exception) -> list[str]:
    """What is wrong with the configuration, a line a field: ``limits.max_rows: Input should
    be a valid integer (from VIGIL_LIMITS__MAX_ROWS)``. The variable is named, its value never
    printed (it may be a token or a store URL with a password). For ``vigil config check``
    and the server's start."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):  # e.g. the YAML's syntax
        return [f"{os.environ.get('VIGIL_CONFIG', 'vigil.yaml')}: {exc}"]
    lines = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        env = "VIGIL_" + "__".join(str(p).upper() for p in e["loc"])
        where = f" (from {env})" if env in os.environ else ""
        if loc:
            lines.append(f"{loc}: {e['msg']}{where}")
        else:  # a check across sections names its keys itself
            lines.append(e["msg"].removeprefix("Value error, "))
    return lines


def load_settings_or_exit() -> Settings:
    """``load_settings`` for a server process: a bad configuration stops it with a line a
    problem on stderr and exit status 2, not a 70-line traceback through BentoML's CLI."""
    import sys

    import yaml

    try:
        return load_settings()
    except (ValueError, OSError, yaml.YAMLError) as exc:  # ValidationError is a ValueError
        print("vigil: invalid configuration (`vigil config check` says the same):",
              *(f"  {line}" for line in problems(exc)), sep="\n", file=sys.stderr)
        raise SystemExit(2) from None


@functools.cache
def settings() -> Settings:
    """The process's Settings, read once (a composition root calls this and passes the object
    down; nothing else reads the configuration)."""
    return load_settings_or_exit()
