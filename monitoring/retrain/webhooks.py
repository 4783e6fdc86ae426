"""Retraining webhooks: the outbox, target templates, Standard Webhooks signing, delivery.

An event is written to the store (``webhook_events`` + one ``webhook_deliveries`` row per
matching target) in the same transaction as the decision that fired it, before anything is
sent. The dispatcher sends due deliveries, records every attempt, and retries failures on a
schedule with jitter, honouring ``Retry-After``; ``410 Gone`` disables a target; after the last
attempt a delivery is a dead letter an operator can redeliver. Delivery is at-least-once: a
crash after sending and before recording sends again, with the same ``webhook-id``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from standardwebhooks import Webhook

from monitoring.tls import target_mounts
from store import Engine, Outbox, Transaction
from store.webhooks import Attempt, DueDelivery, add_event

log = logging.getLogger("vigil.webhooks")

# REFERENCE (Standard Webhooks): now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h
DEFAULT_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
TYPES = ("generic", "airflow2", "airflow3", "github_dispatch", "github_workflow", "prefect")
REQUIRED = {"airflow2": ("dag_id",), "airflow3": ("dag_id",),
            "github_dispatch": ("repository",), "github_workflow": ("repository", "workflow"),
            "prefect": ("deployment_id",)}
METADATA_IPS = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


@dataclass(frozen=True)
class Target:
    name: str
    type: str
    url: str
    events: tuple[str, ...] = ("vigil.retrain.requested", "vigil.test")
    models: tuple[str, ...] | None = None
    secrets: tuple[str, ...] = ()  # whsec_… (two during a rotation)
    options: dict[str, Any] = field(default_factory=dict, hash=False)  # dag_id, repository…
    credentials: dict[str, str] = field(default_factory=dict, hash=False, repr=False)
    ca_bundle: str | None = None  # PEM CAs for this target's certificate (default: system's)
    verify: bool = True  # false only per target, and warned about at start

    def matches(self, event_type: str, model: str | None) -> bool:
        if event_type not in self.events:
            return False
        return self.models is None or model is None or model in self.models


def url_problem(url: str, allow_link_local: bool = False, resolve: bool = True) -> str | None:
    """Why a target URL is refused: not http(s), or it points at a link-local or cloud
    metadata address (SSRF through admin-set URLs) unless explicitly allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http or https"
    if not parts.hostname:
        return "has no host"
    if allow_link_local:
        return None
    try:
        addresses = [ipaddress.ip_address(parts.hostname)]
    except ValueError:
        if not resolve:
            return None
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
        except OSError:
            return None  # unresolvable now; the send itself will fail and be retried
        addresses = [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos]
    for a in addresses:
        if a in METADATA_IPS or a.is_link_local:
            return f"resolves to {a}, a link-local or metadata address"
    return None


# ----------------------------------------------------------------------------- templates


def sign(secrets: tuple[str, ...], msg_id: str, body: str, when: datetime) -> str:
    """The ``webhook-signature`` header: one ``v1,…`` entry per secret."""
    return " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets)


def build_request(target: Target, event: dict[str, Any], event_id: str,
                  token: str | None = None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The target's URL, auth headers and JSON body for an event (its documented shape)."""
    data = event.get("data", {})
    base = target.url.rstrip("/")
    o, creds = target.options, target.credentials
    headers: dict[str, str] = {}
    if target.type == "generic":
        return target.url, headers, event
    if target.type == "airflow2":
        auth = httpx.BasicAuth(creds.get("username", ""), creds.get("password", ""))
        headers["Authorization"] = auth._auth_header  # noqa: SLF001
        return (f"{base}/api/v1/dags/{o['dag_id']}/dagRuns", headers,
                {"dag_run_id": event_id, "conf": event})
    if target.type == "airflow3":
        headers["Authorization"] = f"Bearer {token or ''}"
        return (f"{base}/api/v2/dags/{o['dag_id']}/dagRuns", headers,
                {"dag_run_id": event_id, "logical_date": None, "conf": event})
    if target.type in ("github_dispatch", "github_workflow"):
        headers.update({"Authorization": f"Bearer {creds.get('token', '')}",
                        "Accept": "application/vnd.github+json",
                        "X-GitHub-Api-Version": "2022-11-28"})
        keys = {"event_id": event_id, "model": data.get("model"),
                "champion_version": data.get("champion_version"), "reason": data.get("reason"),
                "dataset_sha256": (data.get("lineage") or {}).get("dataset_sha256"),
                "code_commit": (data.get("lineage") or {}).get("code_commit"),
                "type": event.get("type"), "timestamp": event.get("timestamp"),
                "gateway": data.get("gateway")}  # ≤ 10 keys, as GitHub allows
        if target.type == "github_dispatch":
            return (f"{base}/repos/{o['repository']}/dispatches", headers,
                    {"event_type": o.get("event_type", "vigil-retrain"),
                     "client_payload": keys})
        return (f"{base}/repos/{o['repository']}/actions/workflows/{o['workflow']}/dispatches",
                headers, {"ref": o.get("ref", "main"),
                          "inputs": {k: "" if v is None else str(v) for k, v in keys.items()
                                     if k in ("event_id", "model", "champion_version", "reason",
                                              "dataset_sha256", "code_commit")}})
    if target.type == "prefect":
        if creds.get("token"):
            headers["Authorization"] = f"Bearer {creds['token']}"
        return (f"{base}/deployments/{o['deployment_id']}/create_flow_run", headers,
                {"parameters": {"event": event}, "idempotency_key": event_id})
    raise ValueError(f"unknown target type {target.type!r}")


# ----------------------------------------------------------------------------- outbox


def enqueue(tx: Transaction, event: dict[str, Any], event_id: str, targets: list[Target],
            now: float, model: str | None = None, reason: str | None = None,
            only: str | None = None) -> bool:
    """Write an event and its deliveries (to the targets it matches, or to ``only``) in
    ``tx``. An event id already in the outbox is not written again (False): that is the
    deduplication."""
    names = [t.name for t in targets
             if (only is None and t.matches(event["type"], model)) or t.name == only]
    return add_event(tx, event_id, event, names, now, model, reason)


# ----------------------------------------------------------------------------- dispatch


@dataclass
class Outcome:
    delivery_id: int
    target: str
    status: str  # delivered | retry | dead | disabled
    status_code: int | None
    error: str | None


class Dispatcher:
    def __init__(self, engine: Engine, targets: list[Target], *,
                 schedule: tuple[float, ...] = DEFAULT_SCHEDULE, timeout: float = 15.0,
                 jitter: float = 0.1, allow_link_local: bool = False,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None,
                 claim: bool = False) -> None:
        """``claim``: several dispatchers share the outbox (several replicas), so each
        claims the attempts it makes (``Outbox.claim``)."""
        self.outbox = Outbox(engine)
        self.claim = claim
        self.targets = {t.name: t for t in targets}
        self.schedule = schedule
        self.timeout = timeout
        self.jitter = jitter
        self.allow_link_local = allow_link_local
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_outcome = on_outcome
        self.client = httpx.Client(follow_redirects=False, timeout=timeout,
                                   mounts=target_mounts(targets))  # a target's own CAs
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self.client.close()

    def delay(self, attempts: int) -> float:
        """Seconds before attempt number ``attempts`` (0-based), with ±jitter."""
        base = self.schedule[min(attempts, len(self.schedule) - 1)]
        return base * (1 + self.jitter * (2 * self.rng.random() - 1))

    def run_due(self, limit: int = 50) -> list[Outcome]:
        if self.claim:  # one at a time: a claim outlives the one attempt it covers
            outcomes = []
            for _ in range(limit):
                due, disabled = self.outbox.claim(self.clock(), self.timeout + 30.0, 1)
                if not due:
                    break
                outcomes.append(self._deliver(due[0], disabled))
            return outcomes
        due, disabled = self.outbox.due(self.clock(), limit)
        return [self._deliver(d, disabled) for d in due]

    def _deliver(self, d: DueDelivery, disabled: set[str]) -> Outcome:
        target = self.targets.get(d.target)
        event = d.event
        start = time.perf_counter()
        code: int | None = None
        error: str | None = None
        retry_after: float | None = None
        if target is None:
            error = "target no longer configured"
        elif d.target in disabled:
            error = "target disabled (it answered 410 Gone)"
        elif (problem := url_problem(target.url, self.allow_link_local)) is not None:
            error = f"refused: the URL {problem}"
        else:
            try:
                code, retry_after = self._send(target, event, d.event_id)
            except httpx.TimeoutException:
                error = f"no answer within {self.timeout:g} s"
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            except Exception as exc:  # a template or credential problem: a failed attempt
                error = f"{type(exc).__name__}: {exc}"[:300]
        duration = time.perf_counter() - start
        now = self.clock()
        attempts = d.attempts + 1
        ok = code is not None and (200 <= code < 300 or (
            code == 409 and target is not None and target.type in ("airflow2", "airflow3")))
        if ok:
            status, next_at = "delivered", None
        elif code == 410 or (target is None or d.target in disabled):
            status, next_at = "dead", None
        elif attempts >= len(self.schedule) or (error or "").startswith("refused"):
            status, next_at = "dead", None
        else:
            wait = self.delay(attempts)
            if retry_after is not None:
                wait = max(wait, retry_after)
            status, next_at = "pending", now + wait
        if code is not None and not ok and error is None:
            error = f"HTTP {code}"
        self.outbox.record(Attempt(d.id, d.target, attempts, now, code, error, duration,
                                   status, next_at, gone=code == 410))
        outcome = Outcome(d.id, d.target, "disabled" if code == 410 else
                          "retry" if status == "pending" else status, code, error)
        if status != "delivered":
            log.warning("webhook %s to %s: %s", d.event_id, d.target, error)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def _send(self, target: Target, event: dict[str, Any], event_id: str
              ) -> tuple[int, float | None]:
        token = self._airflow3_token(target) if target.type == "airflow3" else None
        url, headers, body = build_request(target, event, event_id, token)
        r = self._post(target, url, headers, body, event_id)
        if r.status_code == 401 and target.type == "airflow3":  # the JWT expired: once more
            self._tokens.pop(target.name, None)
            url, headers, body = build_request(target, event, event_id,
                                               self._airflow3_token(target))
            r = self._post(target, url, headers, body, event_id)
        retry_after = None
        if "retry-after" in r.headers:
            retry_after = parse_retry_after(r.headers["retry-after"], self.clock())
        return r.status_code, retry_after

    def _post(self, target: Target, url: str, headers: dict[str, str], body: dict[str, Any],
              event_id: str) -> httpx.Response:
        text = orjson.dumps(body).decode()
        when = datetime.fromtimestamp(self.clock(), UTC)
        sent = {**headers, "Content-Type": "application/json", "webhook-id": event_id,
                "webhook-timestamp": str(int(when.timestamp())),
                "User-Agent": "vigil-webhooks/1"}
        if target.secrets:
            sent["webhook-signature"] = sign(target.secrets, event_id, text, when)
        return self.client.post(url, content=text.encode(), headers=sent)

    def _airflow3_token(self, target: Target) -> str:
        if target.name not in self._tokens:
            r = self.client.post(f"{target.url.rstrip('/')}/auth/token", json={
                "username": target.credentials.get("username", ""),
                "password": target.credentials.get("password", "")})
            r.raise_for_status()
            self._tokens[target.name] = r.json()["access_token"]
        return self._tokens[target.name]


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def targets_from_config(items: list[dict[str, Any]], allow_link_local: bool = False,
                        environ: dict[str, str] | None = None) -> list[Target]:
    """Targets from config; secrets and credentials come from the environment only."""
    env = os.environ if environ is None else environ
    out = []
    for item in items:
        name, kind, url = item.get("name"), item.get("type", "generic"), item.get("url", "")
        if not name or kind not in TYPES:
            raise ValueError(f"webhooks.targets: {name!r} needs a name and a type in {TYPES}")
        problem = url_problem(url, allow_link_local, resolve=False)
        if problem:
            raise ValueError(f"webhooks.targets.{name}.url {problem}")
        secrets = tuple(s for s in env.get(item.get("secret_env") or "", "").replace(
            ",", " ").split() if s)
        creds = {k: env.get(item[f"{k}_env"], "") for k in ("username", "password", "token")
                 if item.get(f"{k}_env")}
        options = {k: item[k] for k in ("dag_id", "repository", "workflow", "ref",
                                         "event_type", "deployment_id") if k in item}
        for key in REQUIRED.get(kind, ()):
            if not options.get(key):
                raise ValueError(f"webhooks.targets.{name}.{key} is required for {kind}")
        if item.get("verify", True) is False:
            log.warning("webhooks.targets.%s: certificate verification is OFF", name)
        out.append(Target(name, kind, url, tuple(item.get("events") or Target.events),
                          tuple(item["models"]) if item.get("models") else None, secrets,
                          options, creds, item.get("ca_bundle"), item.get("verify") is not False))
    return out
