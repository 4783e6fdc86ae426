"""The prediction log at rest: AES-256-GCM frames (monitoring/log/frames.py) read back by the
Monitor's reader and the export, key rotation, a wrong key, a flipped byte; and personal data
dropped or hashed before it is written (monitoring/log/pii.py)."""

from __future__ import annotations

import base64
import logging
import os
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from pydantic import ValidationError

from models.card import Feature, parse_card
from monitoring.log.events import PredictionEvent
from monitoring.log.export import export_parquet, keys_from_env
from monitoring.log.frames import HEADER, LogKeyError, LogKeys, Sealer, key_id, split
from monitoring.log.pii import Redactor
from monitoring.log.reader import LocalEventLog
from monitoring.log.sink import LogSink, Renderer, render
from monitoring.log.writer import SegmentWriter, prediction_record
from service.settings import load_settings, problems

SENTINEL = 987654.3125  # exact in binary: written the same by every float formatter
FEATURES = (Feature("income", "float"), Feature("zip", "category", categories=("10115", "75001")),
            Feature("age", "float"))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def event(i: int, income: float = 1.0, rid: str | None = None,
          features: tuple[Feature, ...] = FEATURES) -> PredictionEvent:
    return PredictionEvent(
        request_id=rid or f"r{i}", model="m", version="v1", variant="champion",
        time=1_700_000_000.0 + i, rows=1, latency_seconds=0.001, status="ok",
        inputs=np.array([[income, 1.0, 40.0 + i]]), features=features,
        outputs=[{"value": float(i)}])


def write(directory: Path, stream: str, keys: LogKeys | None, events: list[PredictionEvent],
          render_: object = render) -> None:
    writer = SegmentWriter(directory, stream, render_, keys=keys)  # type: ignore[arg-type]
    sink = LogSink(writer)
    for e in events:
        sink.emit(e)
    writer.close()


def read_all(log: LocalEventLog) -> list[dict]:
    return [orjson.loads(x) for x in log.read({}, 100_000).lines]


def test_a_frame_hides_the_record_names_its_key_and_opens_only_with_it() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    line = orjson.dumps(prediction_record(event(1, SENTINEL))) + b"\n"
    a, b = Sealer(k1).seal(line), Sealer(k1).seal(line)
    assert b"987654" not in a and a != b  # a fresh nonce every frame
    frames, end, skipped = split(a + b)
    assert (len(frames), end, skipped) == (2, len(a + b), [])
    assert frames[0].key_id == key_id(k1) != key_id(k2)
    assert len(a) == HEADER.size + len(line) + 16


def test_encrypted_log_holds_no_value_in_clear_and_reads_back_every_record(
        tmp_path: Path) -> None:
    keys = LogKeys(os.urandom(32))
    write(tmp_path, "gw1-1-1", keys, [event(i, SENTINEL) for i in range(1000)])
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert b"987654" not in data and b'"income"' not in data and b"r999" not in data
    records = read_all(LocalEventLog(tmp_path, keys=keys))
    assert [r["data"]["request_id"] for r in records] == [f"r{i}" for i in range(1000)]
    assert all(r["data"]["inputs"][0]["income"] == SENTINEL for r in records)


def test_export_decrypts_to_the_same_rows_as_a_clear_log(tmp_path: Path) -> None:
    keys = LogKeys(os.urandom(32))
    events = [event(i, float(i)) for i in range(50)]
    write(tmp_path / "clear", "gw1-1-1", None, events)
    write(tmp_path / "enc", "gw1-1-1", keys, events)
    n1 = export_parquet(tmp_path / "clear", tmp_path / "a.parquet")
    n2 = export_parquet(tmp_path / "enc", tmp_path / "b.parquet", keys=keys)
    assert n1 == n2 == 50
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"),
                                  pd.read_parquet(tmp_path / "b.parquet"))
    assert export_parquet(tmp_path / "enc", tmp_path / "c.parquet") == 0  # no key: nothing


def test_rotation_reads_old_and_new_segments_and_a_missing_key_stops_the_start(
        tmp_path: Path) -> None:
    old, new = os.urandom(32), os.urandom(32)
    write(tmp_path, "gw1-1-1", LogKeys(old), [event(i) for i in range(10)])
    write(tmp_path, "gw1-2-2", LogKeys(new, (old,)), [event(i) for i in range(10, 20)])
    rotated = LocalEventLog(tmp_path, keys=LogKeys(new, (old,)))
    rotated.check_keys()
    assert sorted(r["data"]["request_id"] for r in read_all(rotated)) == sorted(
        f"r{i}" for i in range(20))
    with pytest.raises(LogKeyError) as info:  # the old key forgotten: a wrong key
        LocalEventLog(tmp_path, keys=LogKeys(new)).check_keys()
    assert "gw1-1-1.000001.jsonl" in str(info.value) and key_id(old).hex() in str(info.value)
    with pytest.raises(LogKeyError, match="no key is configured"):
        LocalEventLog(tmp_path).check_keys()
    # encryption turned off, old keys kept for reading: new segments clear, old ones open
    write(tmp_path, "gw1-3-3", LogKeys(None, (old, new)), [event(i) for i in range(20, 25)])
    assert len(read_all(LocalEventLog(tmp_path, keys=LogKeys(None, (old, new))))) == 25


def test_a_flipped_byte_is_counted_skipped_and_named(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    keys = LogKeys(os.urandom(32))
    write(tmp_path, "gw1-1-1", keys, [event(i) for i in range(5)])
    (path,) = tmp_path.iterdir()
    data = bytearray(path.read_bytes())
    frames, _, _ = split(bytes(data))
    victim = frames[2]
    data[victim.offset + HEADER.size + 7] ^= 0x01
    path.write_bytes(bytes(data))
    bad: list[tuple[Path, int]] = []
    log = LocalEventLog(tmp_path, keys=keys, on_bad_frame=lambda p, o: bad.append((p, o)))
    with caplog.at_level(logging.ERROR, "vigil.log"):
        batch = log.read({}, 100)
    assert [orjson.loads(x)["data"]["request_id"] for x in batch.lines] == [
        "r0", "r1", "r3", "r4"]
    assert log.bad_frames == 1 and bad == [(path, victim.offset)]
    assert f"{path} : the frame at byte {victim.offset}".replace(" :", ":") in caplog.text
    assert "failed authentication" in caplog.text
    assert log.read(batch.checkpoint, 100).lines == []  # consumed past it, once


def test_a_corrupt_length_in_a_closed_segment_is_skipped_not_a_stall(tmp_path: Path) -> None:
    keys = LogKeys(os.urandom(32))
    write(tmp_path, "gw1-1-1", keys, [event(i) for i in range(4)])
    (path,) = tmp_path.iterdir()
    data = bytearray(path.read_bytes())
    frames, _, _ = split(bytes(data))
    data[frames[1].offset + 20:frames[1].offset + 24] = (10_000_000).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    log = LocalEventLog(tmp_path, keys=keys)
    batch = log.read({}, 100)
    assert [orjson.loads(x)["data"]["request_id"] for x in batch.lines] == ["r0", "r2", "r3"]
    assert log.bad_frames == 1 and log.read(batch.checkpoint, 100).lines == []


def test_a_frame_is_read_only_once_all_its_bytes_are_there(tmp_path: Path) -> None:
    keys = LogKeys(os.urandom(32))
    sealer = Sealer(keys.active)  # type: ignore[arg-type]
    frames = [sealer.seal(orjson.dumps(prediction_record(event(i))) + b"\n") for i in range(3)]
    path = tmp_path / f"gw1-{os.getpid()}-1.000001.open"  # a live writer's segment
    whole = b"".join(frames)
    path.write_bytes(whole[:len(frames[0]) + 30])
    log = LocalEventLog(tmp_path, keys=keys)
    first = log.read({}, 100)
    assert len(first.lines) == 1 and log.bad_frames == 0
    assert log.backlog(first.checkpoint).events == 0
    path.write_bytes(whole)
    rest = log.read(first.checkpoint, 100)
    assert [orjson.loads(x)["data"]["request_id"] for x in rest.lines] == ["r1", "r2"]


def test_keys_are_32_bytes_of_base64_and_a_bad_one_is_named_not_printed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIGIL_LOG__ENCRYPTION__KEY", "c2hvcnQ=")
    with pytest.raises(ValidationError) as info:
        load_settings()
    (line,) = problems(info.value)  # what the server and `vigil config check` print
    assert line.startswith("log.encryption.key: ") and "5 bytes" in line
    assert "c2hvcnQ=" not in line and "(from VIGIL_LOG__ENCRYPTION__KEY)" in line
    good = b64(os.urandom(32))
    monkeypatch.setenv("VIGIL_LOG__ENCRYPTION__KEY", good)
    monkeypatch.setenv("VIGIL_LOG__ENCRYPTION__PREVIOUS_KEYS", f'["{b64(os.urandom(32))}"]')
    s = load_settings()
    keys = s.log.encryption.keys()
    assert keys is not None and len(keys.ids()) == 2 and good not in repr(s)
    assert keys_from_env(os.environ) == keys
    monkeypatch.delenv("VIGIL_LOG__ENCRYPTION__KEY")
    monkeypatch.delenv("VIGIL_LOG__ENCRYPTION__PREVIOUS_KEYS")
    key_file = tmp_path / "log.key"
    key_file.write_text(good + "\n")
    s = load_settings(log={"encryption": {"key_file": str(key_file)}})
    assert s.log.encryption.keys() == LogKeys(base64.b64decode(good))


# --------------------------------------------------------------------------- personal data

PII = (Feature("income", "float"), Feature("zip", "category", categories=("10115", "75001"),
                                           pii="hash"), Feature("age", "float", pii="drop"))


def test_a_card_may_mark_inputs_as_personal_data() -> None:
    card = parse_card({"name": "m", "version": "1", "task": "regression",
                       "inputs": [{"name": "x", "dtype": "float", "pii": "hash"},
                                  {"name": "y", "dtype": "float"}],
                       "onnx_input": {"name": "X", "layout": "matrix"},
                       "outputs": [{"name": "variable", "role": "value"}],
                       "lineage": {"dataset_sha256": "0" * 64, "code_commit": "abc"}})
    assert [f.pii for f in card.features] == ["hash", "keep"]


def test_dropped_inputs_are_never_written_and_hashed_ones_group(tmp_path: Path) -> None:
    key = os.urandom(32)
    renderer = Renderer(redactor=Redactor(key))
    write(tmp_path, "gw1-1-1", None, [event(i, features=PII) for i in range(20)], renderer)
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b'"age"' not in data and b"75001" not in data
    records = read_all(LocalEventLog(tmp_path))
    zips = {r["data"]["inputs"][0]["zip"] for r in records}
    assert zips == {Redactor(key).hash("75001")}  # equal values, equal hashes: they group
    assert len(next(iter(zips))) == 64 and records[0]["data"]["inputs"][0]["income"] == 1.0
    export_parquet(tmp_path, tmp_path / "x.parquet")
    df = pd.read_parquet(tmp_path / "x.parquet")
    assert "input.age" not in df and set(df["input.zip"]) == zips


def test_without_a_hash_key_a_hashed_input_is_dropped_not_written(tmp_path: Path) -> None:
    write(tmp_path, "gw1-1-1", None, [event(1, features=PII)], Renderer(redactor=Redactor(None)))
    (record,) = read_all(LocalEventLog(tmp_path))
    assert record["data"]["inputs"] == [{"income": 1.0}]


def test_hashed_request_ids_still_join_labels(tmp_path: Path) -> None:
    key = os.urandom(32)
    writer = SegmentWriter(tmp_path, "gw1-1-1", Renderer(redactor=Redactor(key, True)))
    sink = LogSink(writer)
    sink.emit(event(1, rid="customer-42@example.com"))
    assert sink.feedback("m", [{"request_id": "customer-42@example.com", "value": 1.0,
                                "row": 0}], time.time())
    writer.close()
    assert b"customer-42" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    pred, label = read_all(LocalEventLog(tmp_path))
    assert pred["data"]["request_id"] == label["data"]["request_id"] == Redactor(key).hash(
        "customer-42@example.com")


def test_personal_inputs_get_no_drift_signal_and_the_drift_api_says_why(
        registry) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from monitoring.drift.tracker import reference_from_version

    mv = registry.get("diabetes", "v1")
    marks = {"age": "drop", "sex": "hash"}
    card = replace(mv.card, features=tuple(replace(f, pii=marks.get(f.name, "keep"))
                                           for f in mv.card.features))
    ref = reference_from_version(replace(mv, card=card))
    assert "age" not in ref.features and "sex" not in ref.features
    assert ref.rows.shape == (len(reference_from_version(mv).rows), len(card.features) - 2)
    assert ref.unmonitored == {"age": "pii: drop", "sex": "pii: hash"}


def test_hashing_request_ids_without_a_hash_key_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match="log.hash_routing_keys needs log.hash_key"):
        load_settings(log={"hash_routing_keys": True})


def test_the_start_check_passes_a_log_directory_that_cannot_be_listed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    LocalEventLog(blocker / "log", keys=LogKeys(os.urandom(32))).check_keys()
