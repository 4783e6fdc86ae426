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

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

Role = Literal["client", "feedback", "viewer", "operator", "admin"]


class Section(BaseModel):
    """A config section: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    workers: int = Field(2, ge=1, le=64)
    port: int = 3000
    host: str = "0.0.0.0"
    demo: bool = True  # register the demo models into an empty store at start
    request_timeout_seconds: float = Field(30.0, gt=0)
    latency_objective_seconds: float = Field(0.1, gt=0)  # a histogram bucket sits here
    # freeze start-up objects out of the garbage collector and collect less often: fewer
    # long pauses in the slowest requests (measured in load_tests/bench.py)
    gc_tuning: bool = True
    # BentoML's OpenTelemetry middleware opens a span per request even with no exporter: a
    # quarter of a /v2 worker's CPU (py-spy). Off unless an operator wants the spans (and
    # configures BentoML's tracing exporter); Prometheus metrics are unaffected.
    tracing: bool = False
    # on SIGTERM, answer readiness 503 but keep serving this long before stopping (service.drain)
    drain_seconds: float = Field(3.0, ge=0, le=300)
    base_url: str = "http://127.0.0.1:3000"


class LimitsSettings(Section):
    max_rows: int = Field(1000, ge=1)
    max_feedback_items: int = Field(1000, ge=1)
    max_concurrency: int = Field(256, ge=1)  # inference requests in flight per worker → 503
    max_header_bytes: int = Field(16384, ge=1024)  # → 431
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # request bodies in flight per worker (by Content-Length) before inference answers 503;
    # parsing a JSON body takes several times its size, so this bounds a flood's memory
    max_inflight_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1024)


class StoreSettings(Section):
    url: str | None = None  # default: sqlite:///{data_dir}/vigil.db
    deployment_poll_seconds: float = Field(0.5, gt=0)
    # how long a statement waits for a locked SQLite store (or a pooled connection) before
    # the admin API answers 503 with Retry-After and the Monitor retries its tick
    busy_timeout_seconds: float = Field(30.0, gt=0)


class LogSettings(Section):
    enabled: bool = True
    dir: str | None = None  # default: {data_dir}/log
    queue_size: int = Field(10_000, ge=1)  # records waiting for the writer; full → drop newest
    fsync_seconds: float = Field(0.5, gt=0)  # the loss window on a machine crash
    segment_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    segment_max_seconds: float = Field(3600.0, gt=0)
    retention_hours: float = Field(72.0, gt=0)  # consumed segments older than this are deleted
    retention_max_bytes: int = Field(2 * 1024**3, ge=1024 * 1024)  # hard cap: writers drop above
    # share of each variant's predictions written to the log (feedback is never sampled)
    sample: dict[Literal["champion", "canary", "shadow", "explicit"],
                 Annotated[float, Field(ge=0.0, le=1.0)]] = {}

    def sample_rate(self, variant: str) -> float:
        return self.sample.get(variant, 1.0)  # type: ignore[call-overload]


class ShadowSettings(Section):
    """Shadows run in the Monitor, on the logged records of the requests routed to them."""

    queue_size: int = Field(10_000, ge=1)  # requests waiting for one shadow; full → drop
    timeout_seconds: float = Field(1.0, gt=0)
    breaker_failures: int = Field(5, ge=1)  # consecutive failures that open the breaker
    breaker_reset_seconds: float = Field(30.0, gt=0)
    max_batch_rows: int = Field(4096, ge=1)  # rows a shadow lane runs in one call at most


class MonitorSettings(Section):
    enabled: bool = True  # run the Monitor service next to the Gateway
    # lag is about one tick's work: at ~1,900 req/s the largest lag seen was 0.60-0.76 s with
    # 0.5 s ticks, 0.58-1.10 s with 1 s ticks (load_tests, README)
    tick_seconds: float = Field(0.5, gt=0)
    batch_events: int = Field(20_000, ge=1)  # events read and committed per transaction
    index_retention_days: float = Field(7.0, gt=0)  # how late a label may arrive
    pending_label_seconds: float = Field(600.0, ge=0)  # a label waits this long for its prediction
    quality_window: int = Field(1000, ge=10)  # the rolling window of the last N labels
    # the Monitor's CPU scheduling priority below the Gateway workers (os.nice increment,
    # 0 to run at the same priority): under saturation it yields the cores and catches up after
    # (applied to its session's scheduling group too: service.process.lower_priority)
    nice: int = Field(10, ge=0, le=19)


class DriftSettings(Section):
    enabled: bool = True
    false_alarms_per_100k: float = Field(1.0, gt=0)  # per model version, family-wise
    window: int = Field(1000, ge=100)  # live rows behind each feature's PSI score
    rebaseline_rows: int = Field(2000, ge=100)  # live rows adopted by a rebaseline
    error_warmup: int = Field(1000, ge=50)  # labels that set the first reference error rate
    error_delay: int = Field(5000, ge=0)  # labels join the reference error rate this late
    sample: float = Field(1.0, gt=0, le=1)  # share of rows the input/prediction detectors see


class TokenSettings(Section):
    name: str
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class AuthSettings(Section):
    inference: Literal["open", "required"] = "open"
    feedback: Literal["open", "required"] = "required"
    tokens: list[TokenSettings] = []
    bootstrap_admin_token: str | None = None  # VIGIL_BOOTSTRAP_ADMIN_TOKEN


class WebhookSettings(Section):
    # - {name, type: generic|airflow2|airflow3|github_dispatch|github_workflow|prefect, url,
    #    events?, models?, secret_env?, username_env?, password_env?, token_env?, dag_id?,
    #    repository?, workflow?, ref?, event_type?, deployment_id?}
    targets: list[dict[str, Any]] = []
    timeout_seconds: float = Field(15.0, gt=0)
    # delay before each attempt; the default spans about 3 days (Standard Webhooks)
    schedule_seconds: list[float] = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    jitter: float = Field(0.1, ge=0, le=0.5)
    dispatch_seconds: float = Field(1.0, gt=0)  # how often the dispatcher looks for due work
    allow_link_local: bool = False  # refuse link-local / metadata target addresses (SSRF)


class QualityPolicy(Section):
    metric: str = "accuracy"
    threshold: float
    min_labels: int = Field(200, ge=1)


class PolicySettings(Section):
    drift_signals: list[Literal["input_mean", "input_scale", "input_category", "input_unseen",
                                "prediction", "error"]] = []
    quality: QualityPolicy | None = None
    schedule_days: float | None = Field(None, gt=0)
    hold_seconds: float = Field(0.0, ge=0)
    cooldown_seconds: float = Field(86_400.0, ge=0)


class Settings(BaseSettings):
    """Everything Vigil reads from its configuration, in the tree of DESIGN §5."""

    model_config = SettingsConfigDict(
        env_prefix="VIGIL_", env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    data_dir: Path = Path("var")
    server: ServerSettings = ServerSettings()
    limits: LimitsSettings = LimitsSettings()
    store: StoreSettings = StoreSettings()
    log: LogSettings = LogSettings()
    shadows: ShadowSettings = ShadowSettings()
    monitor: MonitorSettings = MonitorSettings()
    drift: DriftSettings = DriftSettings()
    policies: dict[str, PolicySettings] = {}  # per model
    rollouts: dict[str, Any] = {}
    webhooks: WebhookSettings = WebhookSettings()
    auth: AuthSettings = AuthSettings()

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
        lines.append(f"{loc}: {e['msg']}{where}")
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
