"""Once per server start, before workers: migrate the store, into an empty store register
the demo models and their deployment, and share every version of this replica's model store
that the store does not hold yet (``service.artifacts``)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from models.deployment import Canary, Deployment, Shadow
from models.registry import Registry
from monitoring.log.consumer import check_keys as check_stream_keys
from monitoring.log.frames import LogKeyError
from monitoring.log.reader import LocalEventLog
from monitoring.retrain.webhooks import targets_from_config
from service.artifacts import build_registry
from service.cluster import stream_spec
from service.settings import Settings
from store import DeploymentStore, make_engine, migrate

log = logging.getLogger("vigil.bootstrap")
DEMO = Path(__file__).resolve().parent.parent / "models" / "demo" / "artifacts"


def register_dir(registry: Registry, directory: Path) -> None:
    registry.register((directory / "model.onnx").read_bytes(),
                      json.loads((directory / "card.json").read_text()),
                      (directory / "reference.csv").read_bytes(), "reference.csv")


def check_log_keys(settings: Settings) -> None:
    """A log sealed by a key that is not configured stops the start with one clear line
    (exit status 2) instead of a Monitor that skips every frame (on NATS: the oldest and
    newest record of every partition, when NATS answers)."""
    keys = settings.log.encryption.keys()
    try:
        if settings.log.backend == "nats":
            check_stream_keys(stream_spec(settings), keys)
        else:
            LocalEventLog(settings.log_dir, keys=keys).check_keys()
    except LogKeyError as exc:
        print(f"vigil: the prediction log cannot be read: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def bootstrap(settings: Settings) -> None:
    # a bad webhook target (scheme, SSRF address, missing dag_id...) stops the start here,
    # with its name, instead of failing every delivery later
    targets_from_config(settings.webhooks.targets, settings.webhooks.allow_link_local)
    check_log_keys(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.store_url, settings.store.busy_timeout_seconds)
    migrate(engine)
    registry = build_registry(settings, engine)
    store = DeploymentStore(engine)
    if settings.server.demo and not store.revisions():
        seed_demo(registry, store)
    shared = registry.share_local()
    if shared:
        log.info("shared %d local versions in the store: %s", len(shared), ", ".join(shared))
    engine.dispose()


def seed_demo(registry: Registry, store: DeploymentStore) -> None:
    """The demo versions and deployments. Replicas started together may all find the store
    empty: the same bytes register as a no-op, and a deployment another replica created
    meanwhile is left as it is."""
    for model_dir in sorted(DEMO.iterdir()):
        for version_dir in sorted(model_dir.iterdir()):
            register_dir(registry, version_dir)
    for deployment in (Deployment(model="breast_cancer", champion="v1",
                                  canary=Canary("v2", 0.1), shadows=(Shadow("v3", 1.0),)),
                       Deployment(model="diabetes", champion="v1")):
        try:
            store.create(deployment)
        except Exception:  # the store's own error for a duplicate key: is it one?
            if deployment.model not in store.revisions():
                raise
    log.info("registered the demo models and deployments")
