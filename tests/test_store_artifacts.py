"""store/artifacts.py on SQLite and PostgreSQL: a version's parts written in chunks, read
back byte for byte, every part checked against its SHA-256 and size on the way out."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.errors import ArtifactInvalid, ArtifactUnavailable, VersionConflict
from store import artifacts
from store.artifacts import ArtifactStore
from store.tables import model_artifact_chunks
from store.transaction import transaction


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Path]:
    """Two parts, one spanning several chunks (CHUNK_BYTES is made small below)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(bytes(range(256)) * 20)  # 5,120 bytes
    (src / "card.json").write_bytes(b'{"name": "m"}')
    return {"model.onnx": src / "model.onnx", "card.json": src / "card.json"}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1000)


def share(store: ArtifactStore, parts: dict[str, Path], digest: str = "d1",
          version: str = "v1", now: float = 1.0) -> bool:
    with transaction(store.engine) as tx:
        return store.share(tx, "m", version, digest, parts, "r1", now=now)


def test_a_shared_version_is_fetched_byte_for_byte_with_its_digests(
        engine: sa.Engine, parts: dict[str, Path], tmp_path: Path) -> None:
    store = ArtifactStore(engine, max_part_bytes=10_000)
    assert share(store, parts)
    stored = store.get("m", "v1")
    assert stored is not None and stored.digest == "d1" and stored.replica == "r1"
    for name, path in parts.items():
        data = path.read_bytes()
        assert stored.parts[name].sha256 == hashlib.sha256(data).hexdigest()
        assert stored.parts[name].size == len(data)
    with engine.connect() as conn:  # 5,120 bytes in chunks of 1,000
        assert conn.execute(sa.select(sa.func.count()).select_from(model_artifact_chunks)
                            .where(model_artifact_chunks.c.part == "model.onnx")).scalar() == 6
    out = tmp_path / "out"
    out.mkdir()
    store.fetch("m", "v1", out)
    for name, path in parts.items():
        assert (out / name).read_bytes() == path.read_bytes()


def test_versions_are_immutable_and_listed_oldest_first(
        engine: sa.Engine, parts: dict[str, Path]) -> None:
    store = ArtifactStore(engine, max_part_bytes=10_000)
    assert share(store, parts, version="v2", now=1.0)
    assert share(store, parts, version="v1", now=2.0)
    assert not share(store, parts, version="v2")  # the same content again: a no-op
    with pytest.raises(VersionConflict):
        share(store, parts, digest="other", version="v2")
    assert store.versions() == {"m": ["v2", "v1"]}
    assert store.get("m", "v3") is None


def test_a_part_over_the_limit_is_refused_naming_it(
        engine: sa.Engine, parts: dict[str, Path]) -> None:
    store = ArtifactStore(engine, max_part_bytes=5_000)
    with pytest.raises(ArtifactInvalid) as err:
        share(store, parts)
    assert err.value.field == "model.onnx" and "5000" in err.value.reason
    assert store.versions() == {}  # nothing written


def test_a_corrupt_or_missing_chunk_is_refused_naming_the_part(
        engine: sa.Engine, parts: dict[str, Path], tmp_path: Path) -> None:
    store = ArtifactStore(engine, max_part_bytes=10_000)
    share(store, parts)
    chunk = model_artifact_chunks.c
    with engine.begin() as conn:
        conn.execute(model_artifact_chunks.update().where(
            chunk.part == "model.onnx", chunk.chunk == 2).values(data=b"\x00" * 1000))
    with pytest.raises(ArtifactUnavailable) as err:
        store.fetch("m", "v1", tmp_path)
    assert err.value.field == "version" and "model.onnx differs" in err.value.reason
    with engine.begin() as conn:
        conn.execute(model_artifact_chunks.delete().where(chunk.part == "card.json"))
    with pytest.raises(ArtifactUnavailable, match="card.json differs"):
        store.fetch("m", "v1", tmp_path)
    with pytest.raises(ArtifactUnavailable, match="no shared copy"):
        store.fetch("m", "v9", tmp_path)


def test_an_unreachable_store_is_a_fetch_failure(tmp_path: Path) -> None:
    gone = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none",
                            connect_args={"connect_timeout": 1})
    with pytest.raises(ArtifactUnavailable, match="the store is unreachable"):
        ArtifactStore(gone, max_part_bytes=10).fetch("m", "v1", tmp_path)
