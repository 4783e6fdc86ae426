"""The versioned model registry, over the BentoML model store.

A version is ``{name}:{version}`` in the BentoML store (so ``bentoml models list`` and
``bentoml build`` see it) holding ``model.onnx``, ``card.json``, ``reference.parquet`` and
``profile.json``. Versions are immutable: registering the same bytes again is a no-op, other
bytes under an existing version are a ``VersionConflict``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.card import ModelCard, parse_card
from models.errors import ArtifactInvalid, CardInvalid, InputInvalid, UnknownModel, VersionConflict
from models.inputs import decode_records
from models.profile import compute_profile
from models.runtime import ModelRuntime

# BentoML's tag rule: lowercase alphanumerics, '.', '_' and '-', starting and ending with an
# alphanumeric (".v1" would pass a looser pattern and then fail inside BentoML as a 500).
NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$"
NAME_RE = re.compile(NAME_PATTERN)
SMOKE_ROWS = 64
MIN_REFERENCE_ROWS = 2
# a version's files: everything a replica needs to serve it without recomputing anything
PARTS = ("model.onnx", "card.json", "reference.parquet", "profile.json")


def check_name(field: str, value: str) -> None:
    """Refuse what BentoML would silently lowercase or truncate."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise CardInvalid(field, f"{value!r} must be 1–63 of [a-z0-9._-], starting and "
                                  "ending with a letter or digit")


def read_reference(data: bytes, filename: str = "") -> pd.DataFrame:
    """Reference rows from CSV or Parquet bytes (Parquet is recognized by its magic bytes)."""
    try:
        if data[:4] == b"PAR1" or filename.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))
    except Exception as exc:
        raise ArtifactInvalid("reference", f"not a readable CSV or Parquet file: {exc}") from None


def _plain(value: Any) -> Any:
    """A pandas cell as the JSON value a client would send (NaN → null)."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and value != value else value


def reference_matrix(card: ModelCard, frame: pd.DataFrame) -> np.ndarray:
    """The reference rows as the model's float matrix, checked against the card."""
    missing = [n for n in card.feature_names if n not in frame.columns]
    if missing:
        raise ArtifactInvalid("reference", f"missing columns {missing[:5]}")
    if len(frame) < MIN_REFERENCE_ROWS:
        raise ArtifactInvalid("reference", f"needs at least {MIN_REFERENCE_ROWS} rows")
    records = [{k: _plain(v) for k, v in rec.items()}
               for rec in frame[card.feature_names].astype(object).to_dict("records")]
    try:
        return decode_records(card, records, field="reference")
    except InputInvalid as exc:
        raise ArtifactInvalid(exc.field, exc.reason) from None


@dataclass(frozen=True)
class ModelVersion:
    """A registered version as read back from the store."""

    card: ModelCard
    path: Path
    onnx_sha256: str
    created_at: str
    digest: str = ""  # of the registered content (``_digest``): equal bytes, equal digest

    @property
    def files(self) -> dict[str, Path]:
        """Each part's file in the local model store."""
        return {part: self.path / part for part in PARTS}

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    def onnx_bytes(self) -> bytes:
        return (self.path / "model.onnx").read_bytes()

    @cached_property
    def profile(self) -> dict[str, Any]:
        return json.loads((self.path / "profile.json").read_text())

    def smoke_rows(self) -> np.ndarray:
        frame = pd.read_parquet(self.path / "reference.parquet")
        return reference_matrix(self.card, frame.head(SMOKE_ROWS))

    def load(self) -> ModelRuntime:
        """An ONNX session for this version, smoke-tested on its reference rows."""
        runtime = ModelRuntime(self.card, self.onnx_bytes())
        runtime.smoke_test(self.smoke_rows())
        return runtime


def _digest(onnx_bytes: bytes, card: dict[str, Any], reference: bytes) -> str:
    h = hashlib.sha256()
    for part in (onnx_bytes, json.dumps(card, sort_keys=True).encode(), reference):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


class Registry:
    """Register and read model versions in the BentoML model store of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def register(self, onnx_bytes: bytes, card_data: Any, reference: bytes,
                 reference_name: str = "") -> tuple[ModelVersion, bool]:
        """Validate and store a version; returns it and whether it was newly created."""
        import bentoml

        if not isinstance(card_data, dict):
            raise CardInvalid("card", "must be a JSON object")
        check_name("card.name", card_data.get("name"))  # type: ignore[arg-type]
        check_name("card.version", card_data.get("version"))  # type: ignore[arg-type]
        card = parse_card(card_data)
        digest = _digest(onnx_bytes, card_data, reference)
        existing = self._find(card.name, card.version)
        if existing is not None:
            if existing.info.labels.get("vigil.digest") == digest:
                return self.get(card.name, card.version), False
            raise VersionConflict("version", f"{card.name}:{card.version} already exists with "
                                  "other content; versions are immutable")
        runtime = ModelRuntime(card, onnx_bytes)
        frame = read_reference(reference, reference_name)
        matrix = reference_matrix(card, frame)
        runtime.smoke_test(matrix[:SMOKE_ROWS])
        profile = compute_profile(card, matrix, runtime.predict(matrix))
        onnx_sha = hashlib.sha256(onnx_bytes).hexdigest()
        labels = {"vigil.digest": digest, "vigil.task": card.task}
        with self._lock:
            if self._find(card.name, card.version) is not None:
                return self.register(onnx_bytes, card_data, reference, reference_name)
            try:
                with bentoml.models.create(
                    f"{card.name}:{card.version}", labels=labels,
                    metadata={"onnx_sha256": onnx_sha, "task": card.task},
                    module="vigil.models",
                ) as model:
                    root = Path(model.path)
                    (root / "model.onnx").write_bytes(onnx_bytes)
                    (root / "card.json").write_text(json.dumps(card_data, indent=2,
                                                               sort_keys=True))
                    frame[card.feature_names].to_parquet(root / "reference.parquet",
                                                         index=False)
                    (root / "profile.json").write_text(json.dumps(profile))
            except bentoml.exceptions.BentoMLException as exc:
                if self._find(card.name, card.version) is not None:
                    raise VersionConflict("version", f"{card.name}:{card.version} was "
                                          "registered concurrently") from None
                raise ArtifactInvalid("model", f"could not store the version: {exc}") from None
        return self.get(card.name, card.version), True

    @staticmethod
    def _find(name: str, version: str) -> Any:
        import bentoml

        try:
            return bentoml.models.get(f"{name}:{version}")
        except bentoml.exceptions.NotFound:
            return None

    def get(self, name: str, version: str) -> ModelVersion:
        if not NAME_RE.match(name or ""):
            raise UnknownModel("model", "not found", message=f"model {name!r} not found")
        if not NAME_RE.match(version or ""):
            raise UnknownModel("version", "not found",
                               message=f"version {version!r} of {name!r} not found")
        found = self._find(name, version)
        if found is None or found.info.module != "vigil.models":
            raise UnknownModel("version", "not found",
                               message=f"version {version!r} of {name!r} not found")
        root = Path(found.path)
        card = parse_card(json.loads((root / "card.json").read_text()))
        return ModelVersion(card=card, path=root,
                            onnx_sha256=str(found.info.metadata.get("onnx_sha256", "")),
                            created_at=found.info.creation_time.isoformat(),
                            digest=str(found.info.labels.get("vigil.digest", "")))

    def ensure(self, name: str, version: str) -> None:
        """Make ``name:version`` available to this process before it is loaded: here it
        must be registered in it (``UnknownModel`` otherwise); ``service.artifacts`` pulls
        it from the shared store."""
        self.get(name, version)

    def has(self, name: str, version: str) -> bool:
        found = self._find(name, version)
        return found is not None and found.info.module == "vigil.models"

    def install(self, name: str, version: str, source: Path, digest: str) -> ModelVersion:
        """Put a version fetched from elsewhere (``source`` holds its ``PARTS``, already
        checked against their SHA-256) into this process's model store, as ``register``
        would have: same files, labels and metadata. Its card must name it. Installing what
        another process installed meanwhile is a no-op; other content is a conflict."""
        import bentoml

        card = parse_card(json.loads((source / "card.json").read_text()))
        if (card.name, card.version) != (name, version):
            raise ArtifactInvalid("card", f"names {card.name}:{card.version}, "
                                  f"not {name}:{version}")
        onnx_sha = hashlib.sha256((source / "model.onnx").read_bytes()).hexdigest()
        with self._lock:
            try:
                if self._find(name, version) is None:
                    with bentoml.models.create(
                        f"{name}:{version}", labels={"vigil.digest": digest,
                                                     "vigil.task": card.task},
                        metadata={"onnx_sha256": onnx_sha, "task": card.task},
                        module="vigil.models",
                    ) as model:
                        for part in PARTS:
                            shutil.copyfile(source / part, Path(model.path) / part)
            except bentoml.exceptions.BentoMLException:
                pass  # another worker of this replica installed it meanwhile: checked below
        installed = self.get(name, version)
        if installed.digest != digest:
            raise VersionConflict("version", f"{name}:{version} is already in this "
                                  "replica's model store with other content")
        return installed

    def list(self) -> dict[str, list[str]]:
        """Every registered model and its versions, oldest first."""
        import bentoml

        models: dict[str, list[tuple[Any, str | None]]] = {}
        for m in bentoml.models.list():
            if m.info.module != "vigil.models":
                continue
            models.setdefault(m.tag.name, []).append((m.info.creation_time, m.tag.version))
        return {name: [str(v) for _, v in sorted(vs)] for name, vs in sorted(models.items())}
