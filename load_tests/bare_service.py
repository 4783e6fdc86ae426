"""The baseline: a bare BentoML service serving the same ONNX file, nothing else.

No routing, validation against a card, logging, shadows or metrics: what `bench.py`
compares Vigil against. Worker count from BARE_WORKERS, model from BARE_ONNX.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
import onnxruntime as ort

WORKERS = int(os.environ.get("BARE_WORKERS", "1"))
ONNX = os.environ.get("BARE_ONNX", "models/demo/artifacts/breast_cancer/v1/model.onnx")


@bentoml.service(workers=WORKERS, logging={"access": {"enabled": False}})
class Bare:
    def __init__(self) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(ONNX, sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    @bentoml.api
    async def predict(self, instances: list[list[float]]) -> dict:
        x = np.asarray(instances, dtype=np.float32)
        label, proba = self.session.run(None, {self.input: x})
        return {"predictions": [{"label_index": int(i), "probabilities": p}
                                for i, p in zip(label.tolist(), proba.tolist(), strict=True)]}
