"""``lsp-train --report-to``: TensorBoard event files and an offline W&B run hold what metrics.jsonl holds."""

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from agents.trackers import check_report_to, parse_report_to

ROOT = Path(__file__).resolve().parents[1]


def wandb_history(run_file: Path) -> tuple[list[dict], dict]:
    """History rows and config of a ``.wandb`` file: a 7-byte header, then leveldb-log records in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts, rows, config = 7, 32768, b"", [], {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk  # FULL / FIRST start a record, MIDDLE / LAST extend it
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            if record.WhichOneof("record_type") == "history":
                rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
            elif record.WhichOneof("record_type") == "run":
                config = {i.key: json.loads(i.value_json) for i in record.run.config.update}
    return rows, config


def test_report_to_tensorboard_and_wandb_log_every_metric_at_its_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "agents.train", "--env", "LSP-Arith-Data-v0", "--model", "tiny-random",
                    "--iterations", "2", "--num-queries", "2", "--num-generations", "2", "--max-completion-length", "8",
                    "--output-dir", str(out), "--report-to", "tensorboard,wandb"], check=True, cwd=ROOT, env=env,
                   capture_output=True, timeout=600)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalar_keys = {k for line in lines for k, v in line.items() if k != "step" and isinstance(v, (int, float))}

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert scalar_keys <= set(events.Tags()["scalars"])
    for key in ("reward/solver", "loss/solver", "tokens/generated"):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(line["step"], pytest.approx(line[key]))
                                                                     for line in lines]
    assert "config" in str(events.Tags()["tensors"])

    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    rows, config = wandb_history(run_file)
    assert [row["_step"] for row in rows] == [line["step"] for line in lines]
    for row, line in zip(rows, lines):
        assert {k: row[k] for k in scalar_keys if k in line} == pytest.approx(
            {k: line[k] for k in scalar_keys if k in line})
    assert config["train"]["iterations"] == 2 and (out / "wandb-run-id").read_text() in run_file.name


def test_report_to_names_and_missing_extras_fail_before_any_work(monkeypatch):
    from agents.train import parse_args, validate

    assert parse_report_to("none") == [] and parse_report_to("wandb, tensorboard") == ["wandb", "tensorboard"]
    with pytest.raises(ValueError, match="--report-to mlflow"):
        parse_report_to("mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'lsp-gym\[wandb\]'"):
        check_report_to("tensorboard,wandb")
    cfg, agent_cfg = parse_args(["--model", "tiny-random", "--report-to", "wandb"])
    with pytest.raises(ImportError, match="lsp-gym\\[wandb\\]"):
        validate(cfg, agent_cfg)  # before any model is loaded
