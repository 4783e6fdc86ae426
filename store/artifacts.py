"""Shared artifacts: the files of every registered version, so that a version registered
through any replica is served by every replica.

A version is a ``model_versions`` row (the registry's content digest, each part's SHA-256 and
size, when and where it was registered) and its parts' bytes in ``model_artifact_chunks``,
``CHUNK_BYTES`` a row: neither SQLite nor PostgreSQL then holds a value near its 1 GB limit,
and a write or a fetch streams a part chunk by chunk instead of holding it whole. A part
larger than ``max_part_bytes`` (the registration upload limit) is refused. Rows are written
once (versions are immutable) and a fetch checks every part's SHA-256 before its file is
handed over, so a replica never installs bytes other than those registered.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from models.errors import ArtifactInvalid, ArtifactUnavailable, Conflict, VersionConflict
from store.engine import UNAVAILABLE
from store.tables import model_artifact_chunks, model_versions
from store.transaction import Engine, Transaction, reading

CHUNK_BYTES = 4 * 1024 * 1024


class SharedMeanwhile(Conflict):
    """Another replica shared this version while this transaction did: roll back, and share
    again in a new transaction (which then compares the digests)."""

    def __init__(self, model: str, version: str) -> None:
        super().__init__("version", f"{model}:{version} was shared concurrently")


@dataclass(frozen=True)
class Part:
    sha256: str
    size: int


@dataclass(frozen=True)
class StoredVersion:
    model: str
    version: str
    digest: str
    parts: dict[str, Part]
    created_at: float
    replica: str


def _version(row: sa.Row) -> StoredVersion:
    parts = {name: Part(p["sha256"], p["size"]) for name, p in json.loads(row.parts).items()}
    return StoredVersion(row.model, row.version, row.digest, parts, row.created_at, row.replica)


class ArtifactStore:
    def __init__(self, engine: Engine, max_part_bytes: int) -> None:
        self.engine = engine
        self.max_part_bytes = max_part_bytes

    def share(self, tx: Transaction, model: str, version: str, digest: str,
              files: Mapping[str, Path], replica: str, now: float | None = None) -> bool:
        """In the caller's transaction, write ``files`` (part name → file) as ``model:version``.
        True when written; False when the same content (``digest``) is already there;
        ``VersionConflict`` when other content is; ``SharedMeanwhile`` when another
        transaction wrote it first; ``ArtifactInvalid`` naming a part over
        ``max_part_bytes``."""
        for name, path in files.items():
            size = path.stat().st_size
            if size > self.max_part_bytes:
                raise ArtifactInvalid(name, f"is {size} bytes; a shared artifact is at most "
                                      f"{self.max_part_bytes} (limits.max_upload_bytes)")
        conn = tx.connection
        existing = self._row(conn, model, version)
        if existing is None:
            try:  # (no savepoint: pysqlite's do not nest in the caller's transaction)
                conn.execute(model_versions.insert().values(
                    model=model, version=version, digest=digest, parts="{}",
                    created_at=time.time() if now is None else now, replica=replica))
            except sa.exc.IntegrityError:
                raise SharedMeanwhile(model, version) from None
        if existing is not None:
            if existing.digest == digest:
                return False
            raise VersionConflict("version", f"{model}:{version} is shared with other "
                                  "content; versions are immutable")
        parts = {name: self._write_part(conn, model, version, name, path)
                 for name, path in sorted(files.items())}
        conn.execute(model_versions.update().where(
            model_versions.c.model == model, model_versions.c.version == version).values(
            parts=json.dumps({n: {"sha256": p.sha256, "size": p.size}
                              for n, p in parts.items()})))
        return True

    @staticmethod
    def _row(conn: sa.Connection, model: str, version: str) -> sa.Row | None:
        return conn.execute(sa.select(model_versions).where(
            model_versions.c.model == model, model_versions.c.version == version)).first()

    @staticmethod
    def _write_part(conn: sa.Connection, model: str, version: str, name: str,
                    path: Path) -> Part:
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as f:
            for i, data in enumerate(iter(lambda: f.read(CHUNK_BYTES), b"")):
                digest.update(data)
                size += len(data)
                conn.execute(model_artifact_chunks.insert().values(
                    model=model, version=version, part=name, chunk=i, data=data))
        return Part(digest.hexdigest(), size)

    def get(self, model: str, version: str) -> StoredVersion | None:
        with reading(self.engine) as tx:
            row = self._row(tx.connection, model, version)
        return None if row is None else _version(row)

    def versions(self) -> dict[str, list[str]]:
        """Every shared model and its versions, oldest first."""
        with reading(self.engine) as tx:
            rows = tx.connection.execute(sa.select(
                model_versions.c.model, model_versions.c.version).order_by(
                model_versions.c.model, model_versions.c.created_at,
                model_versions.c.version)).all()
        found: dict[str, list[str]] = {}
        for row in rows:
            found.setdefault(row.model, []).append(row.version)
        return found

    def fetch(self, model: str, version: str, into: Path) -> StoredVersion:
        """Write each part of ``model:version`` to ``into``/part, checking its size and
        SHA-256; ``ArtifactUnavailable`` says why when there is no row, a part differs, or
        the store cannot be read."""
        try:
            stored = self.get(model, version)
            if stored is None:
                raise ArtifactUnavailable(model, version, "no shared copy in the store")
            for name, part in sorted(stored.parts.items()):
                self._fetch_part(stored, name, part, into / name)
        except UNAVAILABLE as exc:
            raise ArtifactUnavailable(model, version, "the store is unreachable: "
                                      f"{type(exc).__name__}") from None
        return stored

    def _fetch_part(self, stored: StoredVersion, name: str, part: Part, dest: Path) -> None:
        digest, size = hashlib.sha256(), 0
        chunks = model_artifact_chunks.c
        with dest.open("wb") as f, reading(self.engine) as tx:
            for i in range((part.size + CHUNK_BYTES - 1) // CHUNK_BYTES):
                data = tx.connection.execute(sa.select(chunks.data).where(
                    chunks.model == stored.model, chunks.version == stored.version,
                    chunks.part == name, chunks.chunk == i)).scalar()
                if data is None:
                    break
                digest.update(data)
                size += len(data)
                f.write(data)
        if size != part.size or digest.hexdigest() != part.sha256:
            raise ArtifactUnavailable(stored.model, stored.version, (
                f"{name} differs from what was registered (SHA-256 {digest.hexdigest()[:12]}…"
                f", {size} bytes; expected {part.sha256[:12]}…, {part.size} bytes)"))
