"""``/metrics`` of a real 2-worker server: exact counts, the Monitor's series, bounded labels,
``promtool check metrics`` clean, and every series the rules and the dashboard use present."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from load_tests.servers import ROOT
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.test_monitoring import wait_for

pytestmark = pytest.mark.e2e
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`; "
    ".ci/run installs it)")
ALERTS = ROOT / "monitoring" / "alerts"
DASHBOARD = ROOT / "monitoring" / "dashboards" / "vigil.json"
BOUNDED_LABELS = {"model", "version", "variant", "outcome", "reason", "signal", "feature",
                  "target", "kind", "operation", "kpi", "stat",
                  "metric", "window", "status", "type", "le", "task", "dataset_sha256",
                  "code_commit", "vigil_version", "python", "bentoml", "onnxruntime"}
ROW = [14.1, 19.3, 92.0, 655.0, 0.096, 0.104, 0.089, 0.049, 0.181, 0.063, 0.405, 1.217, 2.866,
       40.3, 0.007, 0.025, 0.032, 0.012, 0.021, 0.004, 16.3, 25.7, 107.3, 880.6, 0.132, 0.254,
       0.272, 0.115, 0.290, 0.084]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Known traffic against a fresh server, then one scrape after the Monitor caught up."""
    target = [{"name": "airflow", "type": "generic", "url": "http://127.0.0.1:9/hook"}]
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-metrics"),
                             {"VIGIL_WEBHOOKS__TARGETS": json.dumps(target)})
    try:
        yield drive(srv)
    finally:
        stop_server(proc)


def drive(srv: Server) -> dict[str, Any]:
    started = time.time()
    answers = []
    for i in range(60):
        with httpx.Client(base_url=srv.url, timeout=30) as c:  # new connections: both workers
            r = c.post("/predict", json={"model": "breast_cancer", "instances": [ROW]},
                       headers={"X-Routing-Key": f"user-{i}"})
            assert r.status_code == 200
            answers.append(r.json())
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for _ in range(3):
            assert c.post("/predict", json={"model": "breast_cancer",
                                            "instances": [[1.0]]}).status_code == 422
        assert c.post("/predict", json={"model": "nope", "instances": [[1.0]]}
                      ).status_code == 404
        items = [{"request_id": a["request_id"], "label": "benign"} for a in answers]
        assert c.post("/feedback", json={"model": "breast_cancer", "items": items},
                      headers=srv.headers("feedback")).status_code == 202

        def caught_up(s: dict[str, Any]) -> bool:
            return s["feedback"]["joined"] == 60 and s["monitor"]["lag_events"] == 0

        wait_for(lambda: c.get("/admin/models/breast_cancer/stats",
                               headers=srv.headers("viewer")).json(), caught_up)

        def monitor_published(text: str) -> bool:  # the tick after the joins was exported
            return all(s in text for s in ("vigil_model_quality_labels{",
                                           "vigil_drift_alarm_active{", "vigil_webhook_pending{"))

        text = wait_for(lambda: c.get("/metrics").text, monitor_published, timeout=30)
    return {"text": text, "answers": answers, "started": started,
            "by_variant": Counter((a["version"], a["variant"]) for a in answers)}


def samples(text: str) -> list[Any]:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def test_request_counts_are_exact_per_variant_across_workers(scraped: dict[str, Any]) -> None:
    counted: Counter[tuple[str, str]] = Counter()
    for s in samples(scraped["text"]):
        if s.name == "vigil_requests_total" and s.labels["model"] == "breast_cancer":
            assert s.labels["outcome"] == "ok"
            counted[(s.labels["version"], s.labels["variant"])] += int(s.value)
    assert counted == scraped["by_variant"]
    errors = {s.labels["status"]: s.value for s in samples(scraped["text"])
              if s.name == "vigil_request_errors_total"}
    assert errors["422"] == 3 and errors["404"] == 1 and errors["500"] == 0


def test_the_monitor_and_the_log_are_in_the_same_scrape(scraped: dict[str, Any]) -> None:
    by_name = {s.name: s for s in samples(scraped["text"])}
    assert by_name["vigil_monitor_lag_events"].value == 0
    # the Monitor exported a tick that finished after our traffic began
    assert by_name["vigil_monitor_last_tick_timestamp_seconds"].value >= scraped["started"]
    consumed = sum(s.value for s in samples(scraped["text"])
                   if s.name == "vigil_monitor_events_total" and s.labels["type"] ==
                   "prediction")
    assert consumed == 120  # 60 answers and 60 shadow answers
    written = sum(s.value for s in samples(scraped["text"])
                  if s.name == "vigil_prediction_log_records_total")
    assert written == 120 + 60  # and 60 labels
    quality = {(s.labels["version"], s.labels["variant"]): s.value
               for s in samples(scraped["text"]) if s.name == "vigil_model_quality_labels"
               and s.labels["window"] == "cumulative"}
    assert quality[("v3", "shadow")] == 60
    info = [s.labels for s in samples(scraped["text"])
            if s.name == "vigil_model_info" and s.value == 1]
    served = {(i["model"], i["version"], i["variant"]) for i in info}
    assert {("breast_cancer", "v1", "champion"), ("breast_cancer", "v2", "canary"),
            ("breast_cancer", "v3", "shadow"), ("diabetes", "v1", "champion")} <= served
    assert all(i["dataset_sha256"] for i in info)


def test_no_sample_has_an_unbounded_label(scraped: dict[str, Any]) -> None:
    forbidden = {a["request_id"] for a in scraped["answers"]} | {f"user-{i}" for i in range(60)}
    for s in samples(scraped["text"]):
        assert set(s.labels) <= BOUNDED_LABELS, (s.name, s.labels)
        assert not forbidden & set(s.labels.values()), (s.name, s.labels)
        assert s.labels.get("model") in (None, "breast_cancer", "diabetes"), s  # never "nope"


@needs_promtool
def test_promtool_check_metrics_is_clean_on_a_live_scrape(scraped: dict[str, Any]) -> None:
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=scraped["text"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), \
        out.stdout + out.stderr


def names_in(text: str) -> set[str]:
    found = set(re.findall(r"\b(vigil_[a-z0-9_]+)", text)) - BOUNDED_LABELS
    return {re.sub(r"_(bucket|count|sum)$", "", n) if n.endswith(("_bucket", "_count", "_sum"))
            and "duration" in n else n for n in found}


def exported(text: str) -> set[str]:
    names = {fam.name for fam in text_string_to_metric_families(text)}
    return names | {f"{n}_total" for n in names}  # the parser strips a counter's _total


def rule_series(cluster: bool) -> set[str]:
    """The series the alert rules use: those of the ``vigil.cluster`` group (several
    replicas, ``log.backend: nats``: tests/e2e/test_nats_backend.py scrapes them) or the
    others (every server)."""
    import yaml

    groups = yaml.safe_load((ALERTS / "vigil.rules.yml").read_text())["groups"]
    return names_in(" ".join(r["expr"] for g in groups for r in g["rules"]
                             if (g["name"] == "vigil.cluster") == cluster))


def test_every_series_of_the_rules_and_the_dashboard_is_scraped(scraped: dict[str, Any]
                                                                 ) -> None:
    exported_here = exported(scraped["text"])
    rules = rule_series(cluster=False)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    used = rules | names_in(exprs)
    assert len(used) > 20
    assert used <= exported_here, sorted(used - exported_here)


def test_dashboard_is_provisionable_as_is() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "vigil-overview"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert "label_values(vigil_requests_total, model)" in json.dumps(variables["model"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"


@needs_promtool
def test_alert_rules_check_and_unit_tests_pass() -> None:
    check = subprocess.run([PROMTOOL, "check", "rules", "vigil.rules.yml"], cwd=ALERTS,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([PROMTOOL, "test", "rules", "vigil.rules.test.yml"], cwd=ALERTS,
                          capture_output=True, text=True, timeout=60)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_every_rule_has_what_on_call_needs() -> None:
    import yaml

    rules = [r for g in yaml.safe_load((ALERTS / "vigil.rules.yml").read_text())["groups"]
             for r in g["rules"]]
    runbook = (ROOT / "docs" / "runbook.md").read_text().lower()
    tested = (ALERTS / "vigil.rules.test.yml").read_text()
    for r in rules:
        assert re.fullmatch(r"[A-Z][A-Za-z]+", r["alert"])
        assert r["for"] and r["labels"]["severity"] in ("critical", "warning", "info")
        assert {"summary", "description", "runbook_url"} <= set(r["annotations"])
        anchor = r["annotations"]["runbook_url"].split("#")[1]
        assert f"## {anchor}" in runbook
        assert f"alertname: {r['alert']}" in tested  # every rule has a promtool test
