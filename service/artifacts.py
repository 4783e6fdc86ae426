"""The registry as every replica sees it: this process's BentoML model store (what it loads,
and what ``bentoml models list`` and ``bentoml build`` see) in front of the shared copy in the
store (``store.artifacts``).

Registering writes both: the local version as ``models.registry`` always did, then its files
in the store, with the audit row in the same transaction. A version missing from the local
model store is pulled from the shared copy, each part checked against its SHA-256, and
installed before anything loads it: ``get`` (the admin API, the Monitor) pulls a version that
exists, ``ensure`` (a Gateway worker applying a deployment revision) raises
``ArtifactUnavailable`` saying why it cannot, so the worker keeps its old deployment and
tries again later. One machine (SQLite, the local log) runs the same code: there the local
copy is always present and the shared one is a second copy in the store.
"""

from __future__ import annotations

import fcntl
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.errors import ArtifactInvalid, ArtifactUnavailable, VersionConflict
from models.registry import NAME_RE, PARTS, ModelVersion, Registry
from monitoring.metrics import GatewayMetrics
from service.settings import Settings
from store.artifacts import ArtifactStore, SharedMeanwhile
from store.engine import UNAVAILABLE
from store.transaction import Engine, Transaction, transaction

log = logging.getLogger("vigil.artifacts")

AuditRegistration = Callable[[Transaction, ModelVersion], None]


class SharedRegistry(Registry):
    def __init__(self, artifacts: ArtifactStore, replica: str, scratch: Path | None = None,
                 on_fetch_failure: Callable[[str, str], None] | None = None) -> None:
        super().__init__()
        self.artifacts = artifacts
        self.replica = replica
        self.scratch = scratch  # where a pull writes its parts before they are installed
        self.on_fetch_failure = on_fetch_failure
        self._holding = threading.local()  # this thread holds the pull lock (re-entered)

    def register(self, onnx_bytes: bytes, card_data: Any, reference: bytes,
                 reference_name: str = "", audit: AuditRegistration | None = None
                 ) -> tuple[ModelVersion, bool]:
        """Register locally and share; True only when this call added the version to the
        shared store (``audit`` is then written in the transaction that shares it, so a
        registration is audited exactly when it is shared). The same bytes registered
        through another replica first are a no-op here too, other bytes a
        ``VersionConflict``."""
        name, version = _tag(card_data)
        if name and version:  # the local register then compares the digests
            self._pull_if_shared(name, version)
        mv, created = super().register(onnx_bytes, card_data, reference, reference_name)
        try:
            shared = self.share(mv, audit)
        except VersionConflict:
            if created:  # another replica shared other bytes under this version meanwhile
                self._forget(mv)
            raise
        return mv, shared

    def share(self, mv: ModelVersion, audit: AuditRegistration | None = None) -> bool:
        """Write ``mv``'s files to the store unless there; True when this call wrote them."""
        try:
            return self._share_once(mv, audit)
        except SharedMeanwhile:  # a new transaction sees the other replica's row
            return self._share_once(mv, audit)

    def _share_once(self, mv: ModelVersion, audit: AuditRegistration | None) -> bool:
        with transaction(self.artifacts.engine) as tx:
            wrote = self.artifacts.share(tx, mv.name, mv.version, mv.digest, mv.files,
                                         self.replica)
            if wrote and audit is not None:
                audit(tx, mv)
        return wrote

    def share_local(self) -> list[str]:
        """Share every local version the store does not hold yet (a store that predates
        shared artifacts, or the demo just registered); returns them as model:version."""
        stored = self.artifacts.versions()
        shared = []
        for name, versions in super().list().items():
            for version in versions:
                if version in stored.get(name, ()):
                    continue
                try:
                    self.share(super().get(name, version))
                except VersionConflict:  # said loudly, but no reason to refuse the start
                    log.error("%s:%s in this replica's model store differs from the version "
                              "another replica shared under that name: every replica serves "
                              "the shared one, this one none (ensure); register it again "
                              "under a new version", name, version)
                    continue
                shared.append(f"{name}:{version}")
        return shared

    def get(self, name: str, version: str) -> ModelVersion:
        if NAME_RE.match(name or "") and NAME_RE.match(version or ""):
            self._pull_if_shared(name, version)
        return super().get(name, version)

    def _pull_if_shared(self, name: str, version: str) -> None:
        if not self._here(name, version):
            with self._exclusive():
                if not self.has(name, version) and \
                        self.artifacts.get(name, version) is not None:
                    self.pull(name, version)

    def ensure(self, name: str, version: str) -> None:
        """Before a worker serves ``name:version``: pulled when missing here; when here,
        the bytes the cluster registered under that name (a replica's own older copy of
        other bytes is not served as that version: ``ArtifactUnavailable``, counted)."""
        if self._here(name, version):
            self._check_same(name, version)
            return
        with self._exclusive():
            if not self.has(name, version):
                self.pull(name, version)

    def _check_same(self, name: str, version: str) -> None:
        try:
            stored = self.artifacts.get(name, version)
        except UNAVAILABLE as exc:
            problem = ArtifactUnavailable(name, version, "the store is unreachable: "
                                          f"{type(exc).__name__}")
        else:
            if stored is None or stored.digest == super().get(name, version).digest:
                return  # the same, or this replica's own (never shared): served
            problem = ArtifactUnavailable(name, version, (
                f"this replica's copy differs from the one registered by {stored.replica} "
                "(another content digest); register it again under a new version"))
        log.error("%s", problem.message)
        if self.on_fetch_failure is not None:
            self.on_fetch_failure(name, version)
        raise problem

    def _here(self, name: str, version: str) -> bool:
        """Whether ``name:version`` is in this replica's model store, whole: a version
        another process is installing shows (its directory) before its files are copied,
        so the pull lock is waited for (shared: readers do not wait for one another)."""
        if not self.has(name, version):
            return False
        with self._exclusive(fcntl.LOCK_SH):
            return self.has(name, version)

    @contextmanager
    def _exclusive(self, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
        """One pull at a time among the processes of this replica (its workers and Monitor
        share its data dir and its BentoML model store): BentoML's save is not atomic
        (exists, mkdir, copy), so another process could load a half-copied version.
        ``LOCK_SH``: no pull is under way."""
        if self.scratch is None or getattr(self._holding, "lock", False):
            yield  # a pull of this thread reading back what it installs: it holds the lock
            return
        self.scratch.mkdir(parents=True, exist_ok=True)
        with (self.scratch / "pull.lock").open("a") as lock:
            fcntl.flock(lock, mode)
            self._holding.lock = True
            try:
                yield
            finally:
                self._holding.lock = False
                fcntl.flock(lock, fcntl.LOCK_UN)

    def list(self) -> dict[str, list[str]]:
        """Every version registered through any replica (the store's, oldest first), and
        any this replica holds that is not shared."""
        found = self.artifacts.versions()
        for name, versions in super().list().items():
            known = found.setdefault(name, [])
            known.extend(v for v in versions if v not in known)
        return dict(sorted(found.items()))

    def pull(self, name: str, version: str) -> ModelVersion:
        """Fetch ``name:version`` from the store, check it and install it locally;
        ``ArtifactUnavailable`` (counted) when any of that fails, this replica's disk
        included (full, unwritable: tried again later like a store outage)."""
        try:
            mv, by = self._fetch_install(name, version)
        except OSError as exc:
            failed = ArtifactUnavailable(name, version, f"cannot be written here: {exc}")
        except ArtifactUnavailable as exc:
            failed = exc
        else:
            log.info("pulled %s:%s from the store (registered by %s)", name, version, by)
            return mv
        log.warning("%s", failed.message)
        if self.on_fetch_failure is not None:
            self.on_fetch_failure(name, version)
        raise failed from None

    def _fetch_install(self, name: str, version: str) -> tuple[ModelVersion, str]:
        with tempfile.TemporaryDirectory(prefix="vigil-pull-", dir=self.scratch) as tmp:
            stored = self.artifacts.fetch(name, version, Path(tmp))
            missing = sorted(set(PARTS) - set(stored.parts))
            if missing:
                raise ArtifactUnavailable(name, version, f"the shared copy has no {missing}")
            try:
                return self.install(name, version, Path(tmp), stored.digest), stored.replica
            except (ArtifactInvalid, VersionConflict) as exc:
                raise ArtifactUnavailable(name, version, exc.message) from None

    def _forget(self, mv: ModelVersion) -> None:
        import bentoml

        bentoml.models.delete(f"{mv.name}:{mv.version}")


def _tag(card_data: Any) -> tuple[str | None, str | None]:
    """The card's name and version when they are valid names (``register`` reports the rest)."""
    if not isinstance(card_data, dict):
        return None, None
    name, version = card_data.get("name"), card_data.get("version")
    valid = all(isinstance(v, str) and NAME_RE.match(v) for v in (name, version))
    return (name, version) if valid else (None, None)


def fetch_failures(metrics: GatewayMetrics | None) -> Callable[[str, str], None]:
    """Counts a failed pull in ``vigil_artifact_fetch_failures_total``."""
    def failed(model: str, version: str) -> None:
        if metrics is not None:
            metrics.artifact_fetch_failures.labels(model, version).inc()

    return failed


def build_registry(settings: Settings, engine: Engine,
                   metrics: GatewayMetrics | None = None) -> SharedRegistry:
    """A process's registry (a Gateway worker's, the Monitor's): its BentoML model store in
    front of the shared copies, a failed pull counted in ``metrics``."""
    return SharedRegistry(ArtifactStore(engine, settings.limits.max_upload_bytes),
                          settings.server.replica_id, settings.data_dir / "tmp",
                          fetch_failures(metrics))
