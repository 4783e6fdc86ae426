"""An ONNX session for one model version, checked against its card, and output formatting."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from models.card import ModelCard
from models.errors import ArtifactInvalid, CardInvalid

_ORT_FLOAT = {"float32": np.float32, "float64": np.float64}


def _session(onnx_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # One thread per session: the gateway already runs a process per core, and a row takes
    # microseconds; onnxruntime's thread pool would only add contention.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(onnx_bytes, sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactInvalid("model", f"not a loadable ONNX model: {first[:300]}") from None


class ModelRuntime:
    """Runs one version's ONNX graph on a float matrix and shapes its predictions."""

    def __init__(self, card: ModelCard, onnx_bytes: bytes) -> None:
        self.card = card
        self._session = _session(onnx_bytes)
        self._check_signature()
        self._dtype = _ORT_FLOAT[card.onnx_dtype]
        self._output_names = [card.outputs[r] for r in self._roles()]
        self._labels = list(card.class_labels)

    def _roles(self) -> list[str]:
        return ["label", "probabilities"] if self.card.is_classifier else ["value"]

    def _check_signature(self) -> None:
        card = self.card
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        n = len(card.features)
        if card.onnx_layout == "matrix":
            if card.onnx_input not in inputs:
                raise CardInvalid("card.onnx_input.name",
                                  f"ONNX graph has no input {card.onnx_input!r} "
                                  f"(it has {sorted(inputs)})")
            shape = inputs[card.onnx_input].shape
            width = shape[-1] if shape else None
            if len(inputs) != 1 or len(shape) != 2 or (isinstance(width, int) and width != n):
                raise CardInvalid("card.inputs",
                                  f"card lists {n} features but the ONNX input is {shape}")
            if "float" not in inputs[card.onnx_input].type:
                raise CardInvalid("card.onnx_input", "the ONNX input is not a float tensor")
        else:
            missing = [f.name for f in card.features if f.name not in inputs]
            if missing:
                raise CardInvalid("card.inputs", f"ONNX graph has no inputs {missing}")
        for role in self._roles():
            name = card.outputs[role]
            if name not in outputs:
                raise CardInvalid(f"card.outputs.{role}",
                                  f"ONNX graph has no output {name!r} (it has {sorted(outputs)})")
        if card.is_classifier:
            shape = outputs[card.outputs["probabilities"]].shape
            k = shape[-1] if shape else None
            if isinstance(k, int) and k != len(card.class_labels):
                raise CardInvalid("card.class_labels",
                                  f"{len(card.class_labels)} labels but the model outputs {k} "
                                  "probabilities")

    def run(self, matrix: np.ndarray) -> list[np.ndarray]:
        """Raw ONNX outputs for a float matrix with one row per prediction."""
        x = matrix.astype(self._dtype, copy=False)
        if self.card.onnx_layout == "matrix":
            feeds = {self.card.onnx_input: x}
        else:
            feeds = {f.name: x[:, j:j + 1] for j, f in enumerate(self.card.features)}
        return self._session.run(self._output_names, feeds)

    def predict(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        """One prediction per row, in the shapes of docs/architecture.md, Contracts."""
        outputs = self.run(matrix)
        if not self.card.is_classifier:
            values = np.asarray(outputs[0], dtype=np.float64).reshape(len(matrix))
            return [{"value": float(v)} for v in values.tolist()]
        labels = self._labels
        probs = np.asarray(outputs[1], dtype=np.float64).reshape(len(matrix), len(labels))
        indices = np.asarray(outputs[0]).reshape(len(matrix)).tolist()
        result = []
        for idx, row in zip(indices, probs.tolist(), strict=True):
            i = int(idx)
            result.append({"label": labels[i], "label_index": i,
                           "probabilities": dict(zip(labels, row, strict=True))})
        return result

    def smoke_test(self, matrix: np.ndarray) -> None:
        """Run ``matrix`` (reference rows) and check the outputs are finite and well formed."""
        try:
            preds = self.predict(matrix)
        except (CardInvalid, ArtifactInvalid):
            raise
        except Exception as exc:
            raise ArtifactInvalid("model", f"fails on the reference rows: {exc}") from None
        if len(preds) != len(matrix):
            raise ArtifactInvalid("model", "returned a different number of rows than it was given")
        key = "probabilities" if self.card.is_classifier else "value"
        for p in preds:
            vals = list(p[key].values()) if isinstance(p[key], dict) else [p[key]]
            if not all(np.isfinite(vals)):
                raise ArtifactInvalid("model", "returns non-finite outputs on the reference rows")
