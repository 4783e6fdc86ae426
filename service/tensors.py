"""Open Inference Protocol tensors (pure): decode a request's input tensors — JSON or the
binary tensor data extension, one ``[n, features]`` tensor or one per feature — into the
model's input matrix, and shape the predictions (docs/architecture.md, Contracts) back into
the card's output tensors. Every client mistake is an ``InvalidInput`` (or its
``InputInvalid``) naming the field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.card import ModelCard
from models.errors import InvalidInput
from models.inputs import decode_matrix

NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
         "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
         "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
NUMERIC = frozenset(NUMPY) - {"BOOL"}
INTEGER = frozenset(k for k in NUMERIC if "INT" in k)
DATATYPES = sorted([*NUMPY, "BYTES"])
FLOAT_TYPES = {"float32": "FP32", "float64": "FP64"}


# ----------------------------------------------------------------------------- decoding


@dataclass
class InferRequest:
    matrix: np.ndarray
    id: str | None
    routing_key: str | None
    outputs: list[tuple[str, bool]] | None  # requested (name, binary); None = all
    binary_output: bool  # request-level binary_data_output


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of an infer body (binary tensor data extension)."""
    if header_length is None:
        return raw, b""
    try:
        n = int(header_length)
    except ValueError:
        raise InvalidInput("Inference-Header-Content-Length", "must be an integer") from None
    if not 0 < n <= len(raw):
        raise InvalidInput("Inference-Header-Content-Length",
                           f"{n} is not within the body's {len(raw)} bytes")
    return raw[:n], raw[n:]


def _shape(t: dict[str, Any], where: str) -> list[int]:
    shape = t.get("shape")
    if not isinstance(shape, list) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}.shape", "must be a non-empty list of non-negative integers")
    return shape


def _bytes_elements(chunk: bytes, where: str) -> list[str]:
    out, i = [], 0
    while i < len(chunk):
        if i + 4 > len(chunk):
            raise InvalidInput(f"{where}.data", "truncated BYTES element length")
        n = int.from_bytes(chunk[i:i + 4], "little")
        i += 4
        if i + n > len(chunk):
            raise InvalidInput(f"{where}.data", "truncated BYTES element")
        out.append(chunk[i:i + n].decode("utf-8", errors="replace"))
        i += n
    return out


def tensor_array(t: Any, where: str, binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """One input tensor as a numpy array of its declared shape (numbers as float64, BOOL as
    bool, BYTES as str objects); returns it and the new offset into the binary part."""
    if not isinstance(t, dict):
        raise InvalidInput(where, "must be a tensor object {name, shape, datatype, data}")
    datatype = t.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidInput(f"{where}.datatype", f"{datatype!r} is not one of {DATATYPES}")
    shape = _shape(t, where)
    count = math.prod(shape)
    params = t.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}.parameters", "must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidInput(f"{where}.parameters.binary_data_size",
                               f"{size!r} does not fit the {len(binary) - offset} binary "
                               "bytes left")
        chunk = bytes(binary[offset:offset + size])
        offset += size
        if datatype == "BYTES":
            arr = np.array(_bytes_elements(chunk, where), dtype=object)
        else:
            itemsize = np.dtype(NUMPY[datatype]).itemsize
            if size != count * itemsize:
                raise InvalidInput(f"{where}.parameters.binary_data_size",
                                   f"{size} bytes is not shape {shape} of {datatype} "
                                   f"({count * itemsize} bytes)")
            arr = np.frombuffer(chunk, dtype=np.dtype(NUMPY[datatype]).newbyteorder("<"))
        if arr.size != count:
            raise InvalidInput(f"{where}.data", f"{arr.size} elements for shape {shape}")
        arr = arr.reshape(shape)
    else:
        if "data" not in t:
            raise InvalidInput(f"{where}.data", "is required (or binary_data_size)")
        data = t["data"]
        try:
            if datatype == "BYTES":
                arr = np.array(data, dtype=object)
                if not all(isinstance(v, str) for v in arr.flat):
                    raise ValueError("BYTES elements must be strings")
            elif datatype == "BOOL":
                arr = np.array(data, dtype=object)
                if not all(isinstance(v, bool) for v in arr.flat):
                    raise ValueError("BOOL elements must be true or false")
                arr = arr.astype(bool)
            else:
                arr = np.array(data)
                if arr.dtype.kind not in "iuf" and arr.size:
                    raise ValueError(f"{datatype} elements must be numbers")
                arr = arr.astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{where}.data", f"is not a regular array of {datatype} values "
                               f"({exc})") from None
        if arr.size != count:
            raise InvalidInput(f"{where}.data", f"holds {arr.size} values but shape {shape} "
                               f"needs {count}")
        if arr.ndim > 1 and list(arr.shape) != shape:
            raise InvalidInput(f"{where}.data", f"is nested as {list(arr.shape)}, "
                               f"not as the shape {shape}")
        arr = arr.reshape(shape)
        if datatype in INTEGER and arr.size and not np.all(np.mod(arr, 1) == 0):
            raise InvalidInput(f"{where}.data", f"holds non-integers for {datatype}")
        if datatype in ("FP16", "FP32"):  # the declared precision, as binary data would be
            arr = arr.astype(NUMPY[datatype])
    if datatype in NUMERIC and arr.dtype != np.float64:
        arr = arr.astype(np.float64)
    return arr, offset


def _feature_column(card: ModelCard, j: int, arr: np.ndarray, datatype: str,
                    where: str) -> np.ndarray:
    f = card.features[j]
    if f.dtype == "category":
        if datatype != "BYTES":
            raise InvalidInput(f"{where}.datatype",
                               f"feature {f.name!r} is categorical: send BYTES")
        cats = {c: float(i) for i, c in enumerate(f.categories or ())}
        col = np.empty(len(arr), dtype=np.float64)
        for i, v in enumerate(arr.tolist()):
            if v in cats:
                col[i] = cats[v]
            elif f.nullable:
                col[i] = math.nan  # an unseen category is drift, not a client error
            else:
                raise InvalidInput(f"{where}.data[{i}]", f"unknown category {v!r}")
        return col
    if datatype == "BYTES":
        raise InvalidInput(f"{where}.datatype", f"feature {f.name!r} is numeric: BYTES is "
                           "only for categorical features")
    col = arr.astype(np.float64)
    if f.dtype == "bool" and not np.isin(col, (0.0, 1.0)).all():
        raise InvalidInput(f"{where}.data", f"feature {f.name!r} is boolean: 0/1 or BOOL")
    if f.dtype == "int" and not np.all(np.mod(col[np.isfinite(col)], 1) == 0):
        raise InvalidInput(f"{where}.data", f"feature {f.name!r} takes integers")
    return col


def decode_tensors(card: ModelCard, inputs: Any, binary: bytes, max_rows: int) -> np.ndarray:
    """The model's input matrix from OIP input tensors: one ``[n, features]`` tensor named as
    the card's ONNX input, or one ``[n]`` / ``[n, 1]`` tensor per feature named as the card's
    features."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs", "must be a non-empty list of tensors")
    names = card.feature_names
    width = len(names)
    view = memoryview(binary)
    offset = 0
    arrays = []
    for i, t in enumerate(inputs):
        arr, offset = tensor_array(t, f"inputs[{i}]", view, offset)
        arrays.append((t, arr))
    if offset != len(binary):
        raise InvalidInput("body", f"{len(binary) - offset} binary bytes are not claimed by "
                           "any tensor's binary_data_size")
    first, arr0 = arrays[0]
    if len(arrays) == 1 and first.get("name") not in names:
        if first.get("name") != card.onnx_input:
            raise InvalidInput("inputs[0].name", f"unknown tensor {first.get('name')!r}: send "
                               f"{card.onnx_input!r} with shape [n, {width}], or one tensor "
                               f"per feature ({', '.join(names[:3])}, ...)")
        if first["datatype"] in ("BYTES", "BOOL") and any(
                f.dtype != "bool" for f in card.features):
            raise InvalidInput("inputs[0].datatype",
                               f"{first['datatype']} cannot carry this model's features; send "
                               "a numeric tensor, or one tensor per feature")
        if arr0.ndim != 2 or arr0.shape[1] != width:
            raise InvalidInput("inputs[0].shape", f"{list(arr0.shape)} is not [n, {width}]")
        if arr0.shape[0] > max_rows:
            raise InvalidInput("inputs[0].shape", f"{arr0.shape[0]} rows; the limit is "
                               f"{max_rows} per request")
        if any(f.dtype == "category" for f in card.features):
            raise InvalidInput("inputs[0]", "this model has categorical features: send one "
                               "tensor per feature (BYTES for the categorical ones)")
        return decode_matrix(card, arr0.astype(np.float64), "inputs[0].data")
    index = {n: j for j, n in enumerate(names)}
    columns: dict[int, np.ndarray] = {}
    rows: int | None = None
    for i, (t, arr) in enumerate(arrays):
        name = t.get("name")
        where = f"inputs[{i}]"
        if name not in index:
            raise InvalidInput(f"{where}.name", f"unknown tensor {name!r}: with several "
                               f"tensors each is one feature ({', '.join(names[:3])}, ...)")
        if index[name] in columns:
            raise InvalidInput(f"{where}.name", f"feature {name!r} sent twice")
        if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
            raise InvalidInput(f"{where}.shape", f"{list(arr.shape)} is not [n] or [n, 1]")
        n = arr.shape[0]
        if rows is None:
            rows = n
        elif n != rows:
            raise InvalidInput(f"{where}.shape", f"{n} rows, but the first tensor has {rows}")
        columns[index[name]] = _feature_column(card, index[name], arr.reshape(n),
                                               t["datatype"], where)
    assert rows is not None
    if rows > max_rows:
        raise InvalidInput("inputs", f"{rows} rows; the limit is {max_rows} per request")
    matrix = np.empty((rows, width), dtype=np.float64)
    for j, f in enumerate(card.features):
        if j in columns:
            matrix[:, j] = columns[j]
        elif f.nullable:
            matrix[:, j] = math.nan
        else:
            raise InvalidInput("inputs", f"missing tensor for feature {f.name!r}")
    return decode_matrix(card, matrix, "inputs")


def parse_infer(card: ModelCard, body: Any, binary: bytes, max_rows: int) -> InferRequest:
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object with 'inputs'")
    unknown = sorted(set(body) - {"id", "parameters", "inputs", "outputs"})
    if unknown:
        raise InvalidInput(unknown[0] or repr(unknown[0]), "unknown field (allowed: id, "
                           "parameters, inputs, outputs)")
    rid = body.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInput("id", "must be a string")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput("parameters", "must be an object")
    key = params.get("routing_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 256):
        raise InvalidInput("parameters.routing_key", "must be a string of 1–256 characters")
    outputs = None
    if body.get("outputs") is not None:
        if not isinstance(body["outputs"], list):
            raise InvalidInput("outputs", "must be a list of {name}")
        available = [o["name"] for o in card.raw["outputs"]]
        outputs = []
        for i, o in enumerate(body["outputs"]):
            if not isinstance(o, dict) or o.get("name") not in available:
                raise InvalidInput(f"outputs[{i}].name", f"unknown output "
                                   f"{o.get('name') if isinstance(o, dict) else o!r} "
                                   f"(this model has {available})")
            binary_out = bool((o.get("parameters") or {}).get("binary_data", False))
            outputs.append((o["name"], binary_out))
    matrix = decode_tensors(card, body.get("inputs"), binary, max_rows)
    return InferRequest(matrix, rid, key, outputs, bool(params.get("binary_data_output")))





def output_tensors(card: ModelCard, predictions: list[dict[str, Any]]
                   ) -> dict[str, tuple[str, list[int], np.ndarray]]:
    """Every output of the card as (datatype, shape, array), from the predictions."""
    n = len(predictions)
    out: dict[str, tuple[str, list[int], np.ndarray]] = {}
    for spec in card.raw["outputs"]:
        role, datatype = spec["role"], spec["datatype"]
        shape = [n if d == -1 else d for d in spec["shape"]]
        if role == "label":
            arr = np.array([p["label_index"] for p in predictions], dtype=np.int64)
        elif role == "probabilities":
            labels = list(card.class_labels)
            arr = np.array([[p["probabilities"][c] for c in labels] for p in predictions],
                           dtype=np.float64)
        else:
            arr = np.array([p["value"] for p in predictions], dtype=np.float64)
        out[spec["name"]] = (datatype, shape, arr.reshape(shape))
    return out


def tensor_meta(card: ModelCard) -> dict[str, Any]:
    dt = FLOAT_TYPES.get(card.onnx_dtype, "FP32")
    if card.onnx_layout == "matrix":
        inputs = [{"name": card.onnx_input, "datatype": dt, "shape": [-1, len(card.features)]}]
    else:
        inputs = [{"name": f.name, "datatype": "BYTES" if f.dtype == "category" else
                   "BOOL" if f.dtype == "bool" else dt, "shape": [-1, 1]}
                  for f in card.features]
    outputs = [{"name": o["name"], "datatype": o["datatype"], "shape": o["shape"]}
               for o in card.raw["outputs"]]
    return {"inputs": inputs, "outputs": outputs}
