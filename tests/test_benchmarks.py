"""The overhead benchmark end to end, tiny (2 rounds): it runs and its numbers are sane.
No timing assertions: speed claims come from full runs, not tests."""

import pytest

from benchmarks.overhead import main as overhead


def test_overhead_benchmark_runs(tmp_path, capsys):
    res = overhead(["--model", "small_cnn", "--crop", "64", "--batch", "4", "--classes", "5", "--repeats", "2",
                    "--warmup", "1", "--plot", str(tmp_path / "o.png")])
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("exact-floor ")
    for name in ("baseline", "baseline-again", "mixup", "cutmix", "cutout", "snapmix", "snapmix-lowres", "snapmix-cached", "floor", "snapmix-reference"):
        assert f"| {name} |" in out and res["median_s"][name] > 0
    assert res["overhead"]["baseline"] == 0.0
    # the CAM forward is timed inside SnapMix and the floor, and nowhere else
    assert res["cam_s"]["snapmix"] > 0 and res["cam_s"]["floor"] > 0 and res["cam_s"]["cutmix"] == 0
    assert res["cam_s"]["snapmix"] <= res["augmentation_s"]["snapmix"]
    assert (tmp_path / "o.png").stat().st_size > 0


def test_accuracy_benchmark_quick(tmp_path, capsys):
    """--quick on the embedded set, both protocols, every method: tables, plot and JSON."""
    import json

    from benchmarks.accuracy import METHODS
    from benchmarks.accuracy import main as accuracy

    pytest.importorskip("timm")
    rep = accuracy(["--quick", "--out", str(tmp_path / "acc"), "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    for protocol in ("scratch", "finetune"):
        rows = rep["protocols"][protocol]["summary"]
        assert list(rows) == list(METHODS)
        for m, r in rows.items():
            assert 0.0 <= r["top1_mean"] <= 1.0 and r["seeds"] == 1 and r["s_per_epoch"] > 0, (protocol, m)
            assert f"| {m} | " in out
        hist = rep["protocols"][protocol]["runs"]["snapmix-cached"][0]["history"]
        assert sum(h["cams"]["cached"] for h in hist) > 0  # the cached mode re-projected maps
    saved = json.loads((tmp_path / "acc" / "accuracy.json").read_text())
    assert saved["protocols"]["finetune"]["summary"]["snapmix"]["top1_mean"] == rep["protocols"]["finetune"]["summary"]["snapmix"]["top1_mean"]
    assert (tmp_path / "acc" / "accuracy.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="unknown"):
        accuracy(["--quick", "--methods", "fmix"])
