"""dtd train --wandb: an offline run's own files hold the same metrics as metrics.jsonl, and a resume continues
the same wandb run (skipped without wandb: pip install "decision-transducer[wandb]")."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

wandb_pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")


def read_wandb_file(path: Path) -> list:
    """The records of a .wandb file: a 7-byte header (':W&B', magic, version), then LevelDB-log blocks of 32 KiB
    whose chunks (checksum, length, type: 1 full, 2 first, 3 middle, 4 last) hold protobuf `Record`s."""
    data, records, pos, buf = path.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def history(run_dir: Path) -> tuple[set[str], dict[int, dict[str, float]]]:
    """(run ids, step -> logged values) over every offline run in the folder (a resume adds one)."""
    ids, rows = set(), {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for rec in read_wandb_file(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                ids.add(rec.run.run_id)
                assert rec.run.run_group == "grid" and rec.run.project == "dtd-test"
                assert json.loads(next(u.value_json for u in rec.run.config.update if u.key == "model")) == "bc"
            elif kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                rows.setdefault(int(items["_step"]), {}).update({k: v for k, v in items.items() if not k.startswith("_")})
    return ids, rows


def test_offline_wandb_run_holds_the_metrics_and_a_resume_continues_it(tmp_path, monkeypatch):
    from dtd.config import TrainConfig
    from dtd.training.tracking import WANDB_FILE, Wandb, flatten
    from dtd.training.trainer import resume, train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = TrainConfig(model="bc", run_name="r", out_dir=str(tmp_path), steps=20, batch_size=8, context_len=4,
                      eval_episodes=1, eval_max_steps=20, eval_untrained=False, log_every=5, eval_every=10,
                      ckpt_every=10, model_options={"hidden_size": 16, "n_layer": 1})
    run = train(cfg, progress=False, tracker=Wandb("dtd-test", "grid")).run_dir
    resume(run, {"steps": 30}, progress=False, tracker=Wandb())  # the project, group and id come from the folder
    saved = json.loads((run / WANDB_FILE).read_text())
    ids, rows = history(run)
    assert ids == {saved["id"]} and saved["project"] == "dtd-test"  # one wandb run across the resume
    expected: dict[int, dict[str, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        expected.setdefault(record["step"], {}).update(flatten(record))
    assert rows == expected and sorted(rows) == [5, 10, 15, 20, 25, 30]
    assert {"train/loss", "train/lr", "train/samples_per_s", "eval/3600/normalized_mean"} <= set(rows[30])
