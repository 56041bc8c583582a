"""The trainer end to end on the small embedded set (1 short epoch)."""

import json

from train_dali import main


def test_trainer_runs_and_logs(birds, tmp_path):
    out = tmp_path / "run"
    res = main(["--data", str(birds.root), "--epochs", "1", "--resize", "40", "--crop", "32",
                "--batch-size", "8", "--out", str(out)])
    assert 0.0 <= res["top1"] <= 1.0 and res["images_per_s"] > 0
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["top1"] == res["top1"]
    assert json.loads((out / "config.json").read_text())["crop"] == 32
