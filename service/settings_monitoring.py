"""The Monitor's sections of the Settings: the loop, drift and its detectors, retraining
webhooks and policies, business KPIs. Kept apart from ``service.settings`` (which imports them
into the one ``Settings`` model) so each module stays one screenful of keys."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A config section: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class MonitorSettings(Section):
    enabled: bool = Field(True, description="Run the Monitor service next to the Gateway.")
    # lag is about one tick's work: at ~1,900 req/s the largest lag seen was 0.60-0.76 s with
    # 0.5 s ticks, 0.58-1.10 s with 1 s ticks (load_tests, docs/performance.md)
    tick_seconds: float = Field(0.5, gt=0, description="How often the Monitor reads what the "
                                "workers wrote since its last tick.")
    batch_events: int = Field(20_000, ge=1, description="Log records read and committed per "
                              "transaction.")
    index_retention_days: float = Field(7.0, gt=0, description="How long the prediction index "
                                        "keeps a request: how late a label may arrive.")
    pending_label_seconds: float = Field(600.0, ge=0, description="How long a label may "
                                         "precede its prediction in the log before it counts "
                                         "as unmatched.")
    quality_window: int = Field(1000, ge=10, description="The rolling window of live quality: "
                                "the last N labels.")
    # under saturation the Monitor yields the cores and catches up after
    # (applied to its session's scheduling group too: service.process.lower_priority)
    nice: int = Field(10, ge=0, le=19, description="The Monitor's CPU priority below the "
                      "Gateway workers (an `os.nice` increment and its session's autogroup; 0: "
                      "the same priority).")


ContinuousDetector = Literal["cusum", "river.ADWIN", "river.PageHinkley", "river.KSWIN"]


BinaryDetector = Literal["river.binary.DDM", "river.binary.EDDM", "river.binary.FHDDM",
                         "river.binary.HDDMA", "river.binary.HDDMW"]


class DriftDetectorSettings(Section):
    # defaults chosen on `make drift-bench` (docs/monitoring.md, Drift: which detector)
    input_mean: ContinuousDetector = Field("cusum", description="Each numeric feature's mean: "
                                           "Vigil's CUSUMs or a River detector on its normal "
                                           "scores.")
    input_scale: ContinuousDetector = Field("cusum", description="Each numeric feature's "
                                            "spread: CUSUMs or a River detector on z² − 1.")
    input_joint: Literal["mahalanobis", "river.HalfSpaceTrees", "river.LODA"] = Field(
        "mahalanobis", description="How unusual a row is as a whole (its score then watched "
        "by CUSUMs): the Mahalanobis distance of its normal scores, or a River anomaly "
        "scorer fitted on the reference rows (30 µs a row and more on 30 features).")
    prediction: ContinuousDetector = Field("cusum", description="The model's output scores.")
    error: ContinuousDetector | BinaryDetector = Field(
        "cusum", description="Joined labels' errors; `river.binary.*` for classifiers only "
        "(a regressor falls back to CUSUMs).")


class DriftSettings(Section):
    enabled: bool = Field(True, description="Run the drift detectors in the Monitor.")
    detectors: DriftDetectorSettings = Field(DriftDetectorSettings(), description="The "
                                             "detector of each signal, all calibrated to the "
                                             "one false-alarm budget.")
    river_stride: int = Field(1, ge=1, le=64, description="River detectors on inputs and "
                              "predictions see every n-th row (their per-row cost and "
                              "budget divided, their delays multiplied, by n).")
    false_alarms_per_100k: float = Field(1.0, gt=0, description="The false-alarm budget per "
                                         "model version and 100k rows, family-wise over every "
                                         "signal.")
    window: int = Field(1000, ge=100, description="Live rows behind each feature's PSI score.")
    rebaseline_rows: int = Field(2000, ge=100, description="Live rows a rebaseline adopts at "
                                 "most (kept in the Monitor's memory).")
    error_warmup: int = Field(1000, ge=50, description="Labels that set the first reference "
                              "error rate.")
    error_delay: int = Field(5000, ge=0, description="Labels join the reference error rate "
                             "this many labels later.")
    sample: float = Field(1.0, gt=0, le=1, description="Share of rows the input and prediction "
                          "detectors see (delays grow by 1/sample).")


class WebhookSettings(Section):
    # - {name, type: generic|airflow2|airflow3|github_dispatch|github_workflow|prefect, url,
    #    events?, models?, secret_env?, username_env?, password_env?, token_env?, dag_id?,
    #    repository?, workflow?, ref?, event_type?, deployment_id?, ca_bundle?, verify?}
    targets: list[dict[str, Any]] = Field([], description="Retraining webhook targets: `{name, "
                                          "type, url, ...}`; see docs/operations.md, "
                                          "Retraining webhooks. A bad target stops the server "
                                          "at start. `ca_bundle` (a PEM path) trusts a "
                                          "private CA for one target; `verify: false` turns "
                                          "its certificate check off, with a warning at "
                                          "start.")
    timeout_seconds: float = Field(15.0, gt=0, description="One delivery attempt's timeout.")
    schedule_seconds: list[float] = Field(
        [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
        description="Delay before each attempt; the default spans about 3 days (Standard "
        "Webhooks), then the delivery is a dead letter.")
    jitter: float = Field(0.1, ge=0, le=0.5, description="Random ± share on every retry delay.")
    dispatch_seconds: float = Field(1.0, gt=0, description="How often the dispatcher looks for "
                                    "due deliveries.")
    allow_link_local: bool = Field(False, description="Allow link-local and cloud-metadata "
                                   "target addresses (refused by default: SSRF).")


class QualityPolicy(Section):
    metric: str = Field("accuracy", description="A live quality metric (`accuracy`, `f1`, "
                        "`log_loss`, `mae`, ...).")
    threshold: float = Field(description="Fires below it (accuracy, f1, ...) or above it "
                             "(log_loss, mae, rmse).")
    min_labels: int = Field(200, ge=1, description="Labels the metric must rest on.")


class PolicySettings(Section):
    drift_signals: list[Literal["input_mean", "input_scale", "input_joint", "input_category",
                                "input_unseen", "prediction", "error"]] = Field(
        [], description="Fire on an open drift alarm of these signals.")
    quality: QualityPolicy | None = Field(None, description="Fire when live quality passes a "
                                          "threshold.")
    schedule_days: float | None = Field(None, gt=0, description="Fire this many days after "
                                        "the champion was created or the last trigger.")
    hold_seconds: float = Field(0.0, ge=0, description="A condition must hold this long "
                                "before it fires.")
    cooldown_seconds: float = Field(86_400.0, ge=0, description="Per model and reason: no "
                                    "second firing within this long.")


class KpiSettings(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,63}$", description="The KPI's name, as "
                      "`/feedback` items send it in `kpis`.")
    kind: Literal["binary", "continuous"] = Field(description="`binary` (0 or 1: a "
                                                  "conversion) or `continuous` (revenue).")
    better: Literal["higher", "lower"] = Field("higher", description="Which way is better.")
