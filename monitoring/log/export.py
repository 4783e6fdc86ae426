"""Export prediction records to Parquet: one row per predicted input row.

    python -m monitoring.log.export --model breast_cancer --since 24h --out preds.parquet

Columns: ``time`` (UTC), ``request_id``, ``row``, ``model``, ``version``, ``variant``,
``status``, ``latency_seconds``, ``error``, ``agreement`` (shadows), one ``input.<feature>``
column per feature and the flattened outputs (``output.label``, ``output.label_index``,
``output.probabilities.<class>``, or ``output.value``). Reads the segment files directly (only
complete lines), so it works whether or not the server is running. An encrypted log is opened
with ``VIGIL_LOG__ENCRYPTION__KEY`` (and ``..._PREVIOUS_KEYS``, a JSON list) from the
environment.

On ``log.backend: nats`` (``--nats URL --stream NAME --partitions N``, or ``vigil logs
export``, which reads the configuration) the records come from the model's partition of the
stream (every partition without ``--model``), from ``--since`` on, plus every spill under
``<log dir>/spill`` not yet forwarded, each event id once (a record both published and
spilled, or forwarded twice, is one row).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from monitoring.log.consumer import read_since
from monitoring.log.frames import LogKeyError, LogKeys
from monitoring.log.jetstream import StreamSpec
from monitoring.log.partitions import partition_of
from monitoring.log.reader import Checkpoint, LocalEventLog
from monitoring.log.writer import PREDICTION, parse_time

RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: float | None = None) -> float:
    """``24h``, ``30m``, ``7d`` (relative to now) or an ISO 8601 time."""
    m = RELATIVE.match(value)
    if m:
        return (now or time.time()) - float(m[1]) * UNITS[m[2]]
    try:
        return parse_time(value if ("+" in value or value.endswith("Z")) else value + "+00:00")
    except ValueError:
        raise ValueError(f"--since {value!r}: expected e.g. 24h, 30m, 7d or "
                         "2026-11-27T00:00:00Z") from None


def records(log_dir: Path, keys: LogKeys | None = None) -> Iterator[dict[str, Any]]:
    """Every complete record of the log, opened with ``keys`` when it is encrypted (a frame
    that fails authentication is logged and skipped, as the Monitor does)."""
    log = LocalEventLog(log_dir, keys=keys)
    checkpoint: Checkpoint = {}
    while True:
        batch = log.read(checkpoint, 10_000)
        if not batch.lines:
            return
        checkpoint = batch.checkpoint
        for line in batch.lines:
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue


def nats_records(spec: StreamSpec, spill_root: Path, *, model: str | None = None,
                 since: float | None = None,
                 keys: LogKeys | None = None) -> Iterator[dict[str, Any]]:
    """The records of a log on NATS: ``model``'s partition of the stream (every partition
    when None) from ``since`` on, then the spills under ``spill_root`` (a worker's own and
    those it claimed from dead ones) not yet forwarded, each event id once. ``keys`` open
    sealed records, on the stream and in the spills."""
    partitions = ([partition_of(model, spec.partitions)] if model is not None
                  else range(spec.partitions))
    streamed = (_parsed(line) for line in read_since(spec, partitions, since, keys=keys))
    try:
        spills = sorted(p for p in spill_root.iterdir() if p.is_dir())
    except FileNotFoundError:
        spills = []
    seen: set[str] = set()
    for rec in chain(streamed, *(records(d, keys) for d in spills)):
        if rec is None:
            continue
        event_id = rec.get("id")
        if isinstance(event_id, str):
            if event_id in seen:
                continue
            seen.add(event_id)
        yield rec


def _parsed(line: bytes) -> dict[str, Any] | None:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


def rows_of(rec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    d = rec["data"]
    base = {"time": parse_time(rec["time"]), "request_id": d["request_id"],
            "model": d["model"], "version": d["version"], "variant": d["variant"],
            "status": d.get("status"), "latency_seconds": d.get("latency_seconds"),
            "error": d.get("error"), "agreement": d.get("agreement")}
    inputs = d.get("inputs") or []
    outputs = d.get("outputs") or []
    for i in range(max(len(inputs), len(outputs), int(d.get("rows") or 0))):
        row = {**base, "row": i}
        if i < len(inputs):
            flatten("input", inputs[i], row)
        if i < len(outputs):
            flatten("output", outputs[i], row)
        yield row


def export_parquet(log_dir: Path, out: Path, *, model: str | None = None,
                   since: float | None = None, until: float | None = None,
                   keys: LogKeys | None = None) -> int:
    """Write the matching predictions of the local log to ``out``; returns the number of
    rows written. ``keys`` open an encrypted log (``log.encryption``)."""
    return write_parquet(records(Path(log_dir), keys), out, model=model, since=since,
                         until=until)


def write_parquet(source: Iterable[dict[str, Any]], out: Path, *, model: str | None = None,
                  since: float | None = None, until: float | None = None) -> int:
    """Write the matching predictions among ``source``'s records to ``out``; returns the
    number of rows written."""
    rows: list[dict[str, Any]] = []
    for rec in source:
        if rec.get("type") != PREDICTION:
            continue
        if model is not None and rec["data"].get("model") != model:
            continue
        ts = parse_time(rec["time"])
        if (since is not None and ts < since) or (until is not None and ts >= until):
            continue
        rows.extend(rows_of(rec))
    df = pd.DataFrame(rows)
    for col in [c for c in df.columns if df[c].dtype.kind == "O"]:
        # a feature hashed from some time on (personal data) holds numbers and hex strings
        kinds = {type(v) for v in df[col].dropna()}
        if str in kinds and len(kinds) > 1:
            df[col] = df[col].where(df[col].isna(), df[col].astype(str))
    if not df.empty:
        df = df.sort_values(["time", "request_id", "row"], kind="stable")
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out)
    return len(df)


def keys_from_env(environ: Mapping[str, str]) -> LogKeys | None:
    """The log's keys from the variables the server reads (``VIGIL_LOG__ENCRYPTION__KEY``,
    ``VIGIL_LOG__ENCRYPTION__PREVIOUS_KEYS`` as a JSON list), for this tool run by hand;
    ``vigil logs export`` reads the whole configuration instead."""
    previous = orjson.loads(environ.get("VIGIL_LOG__ENCRYPTION__PREVIOUS_KEYS") or "[]")
    return LogKeys.from_config(environ.get("VIGIL_LOG__ENCRYPTION__KEY"), previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring.log.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-dir", type=Path,
                        default=Path(os.environ.get("VIGIL_DATA_DIR", "var")) / "log")
    parser.add_argument("--model")
    parser.add_argument("--since", help="24h, 30m, 7d or an ISO 8601 time")
    parser.add_argument("--until", help="same forms as --since")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--nats", metavar="URL", help="the log is on NATS JetStream here")
    parser.add_argument("--stream", default="VIGIL", help="its stream (with --nats)")
    parser.add_argument("--partitions", type=int, default=8, help="its partitions (with --nats)")
    args = parser.parse_args(argv)
    try:
        since = parse_since(args.since) if args.since else None
        until = parse_since(args.until) if args.until else None
    except ValueError as exc:
        parser.error(str(exc))
    try:
        keys = keys_from_env(os.environ)
    except (LogKeyError, ValueError) as exc:
        parser.error(str(exc))
    if args.nats:
        spec = StreamSpec(url=args.nats, name=args.stream, partitions=args.partitions)
        try:
            n = write_parquet(nats_records(spec, args.log_dir / "spill", model=args.model,
                                           since=since, keys=keys), args.out,
                              model=args.model, since=since, until=until)
        except LogKeyError as exc:
            parser.error(str(exc))
    else:
        n = export_parquet(args.log_dir, args.out, model=args.model, since=since, until=until,
                           keys=keys)
    print(f"wrote {n} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
