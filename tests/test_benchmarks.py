"""The overhead benchmark end to end, tiny (2 rounds): it runs and its numbers are sane.
No timing assertions: speed claims come from full runs, not tests."""

from benchmarks.overhead import main as overhead


def test_overhead_benchmark_runs(tmp_path, capsys):
    res = overhead(["--model", "small_cnn", "--crop", "64", "--batch", "4", "--classes", "5", "--repeats", "2",
                    "--warmup", "1", "--plot", str(tmp_path / "o.png")])
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("exact-floor ")
    for name in ("baseline", "mixup", "cutmix", "cutout", "snapmix", "snapmix-lowres", "snapmix-cached", "floor", "snapmix-reference"):
        assert f"| {name} |" in out and res["median_s"][name] > 0
    assert res["overhead"]["baseline"] == 0.0
    assert (tmp_path / "o.png").stat().st_size > 0
