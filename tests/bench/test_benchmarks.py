"""The overhead benchmark end to end, tiny (2 rounds): it runs and its numbers are sane.
No timing assertions: speed claims come from full runs, not tests."""

import dataclasses
import importlib.util
import itertools
import json

import numpy as np
import pytest

from benchmarks.overhead import (
    attentivemix_authors_style,
    guided_ap_authors_style,
    guided_sr_authors_style,
    opencv_saliency,
    saliencymix_authors_style,
)
from benchmarks.overhead import main as overhead


def test_overhead_benchmark_runs(tmp_path, capsys):
    res = overhead(["--model", "small_cnn", "--crop", "64", "--batch", "4", "--classes", "5", "--repeats", "2",
                    "--warmup", "0", "--plot", str(tmp_path / "o.png")])
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("exact-floor ")
    names = ("baseline", "baseline-again", "mixup", "cutmix", "cutout", "resizemix", "ricap", "fmix", "smoothmix",
             "samplepairing", "mixed-example", "saliencymix", "manifold", "guided-sr", "guided-ap", "puzzlemix", "comixup",
             "automix", "saliencymix-released", "guided-sr-reference", "guided-ap-reference", "attentivemix",
             "attentivemix-reference", "snapmix", "snapmix-lowres",
             "snapmix-cached", "floor", "snapmix-reference") + (("saliencymix-reference",) if opencv_saliency() else ()) + \
        (("puzzlemix-reference", "comixup-reference") if importlib.util.find_spec("gco") else ())
    t = {n: np.asarray(res["times_s"][n], dtype=np.float64) for n in names}
    for name in names:
        assert f"| {name} |" in out and len(t[name]) == 2
        # the summary figures, recomputed from the raw per-round step times
        assert res["median_s"][name] == pytest.approx(np.median(t[name]), rel=1e-12)
        paired = np.median(t[name] / t["baseline"] - 1)  # each round against its own baseline step
        assert res["overhead"][name] == pytest.approx(paired, rel=1e-9, abs=1e-12), name
        assert f"| {name} | {np.median(t[name]) * 1e3:.1f} | {paired:+.1%} |" in out
    k = 5  # --refresh-every's default: one exact epoch in five
    want = (res["overhead"]["snapmix"] + (k - 1) * res["overhead"]["snapmix-cached"]) / k
    assert res["cached_amortised"] == pytest.approx(want, rel=1e-12)
    # the CAM forward is timed inside SnapMix and the floor, and nowhere else
    assert res["cam_s"]["snapmix"] > 0 and res["cam_s"]["floor"] > 0 and res["cam_s"]["cutmix"] == 0
    assert res["cam_s"]["attentivemix"] > 0  # its CAM pass
    for name in ("puzzlemix", "puzzlemix-reference", "comixup", "comixup-reference", "automix"):  # the saliency passes (AutoMix: its teacher's)
        assert res["cam_s"].get(name, 1) > 0, name
    assert (tmp_path / "o.png").stat().st_size > 0


def test_overhead_rows_picks_rows_and_names_a_wrong_one(capsys):
    """--rows times the rows asked for, with the baseline and SnapMix's summary rows."""
    res = overhead(["--model", "small_cnn", "--crop", "32", "--batch", "2", "--classes", "3", "--repeats", "1",
                    "--warmup", "0", "--plot", "", "--rows", "cutmix,comixup"])
    assert set(res["overhead"]) == {"baseline", "cutmix", "comixup", "snapmix", "snapmix-lowres", "snapmix-cached", "floor"}
    assert "| comixup |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--rows: no row cutmixx here"):
        overhead(["--model", "small_cnn", "--crop", "32", "--batch", "2", "--rows", "cutmixx"])


def test_saliencymix_reference_is_saliencymix_the_authors_way():
    """The overhead's authors'-style row computes what SaliencyMix computes (same draws):
    the speed-up is for the same output."""
    import torch

    from dali_snapmix.data.spec import IMAGENET_MEAN, IMAGENET_STD
    from dali_snapmix.mix import SaliencyMix

    if opencv_saliency() is None:
        pytest.skip("opencv-contrib-python-headless is not installed")
    x, y = torch.randn(5, 3, 40, 36), torch.arange(5)
    want = SaliencyMix(seed=7)(x.clone(), y)
    got = saliencymix_authors_style(x.clone(), y, rng=np.random.default_rng(7), detector=opencv_saliency(),
                                    mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert torch.equal(got.images, want.images) and torch.equal(got.weights, want.weights)
    assert torch.equal(got.labels, want.labels) and not torch.equal(got.images, x)


@pytest.mark.parametrize("side", [40, 150])
def test_guided_sr_reference_is_guided_sr_the_releases_way(side):
    """The overhead's Guided-SR reference row (the release's ops) computes what GuidedMixup
    computes: the same partners, images and weights up to float32 rounding."""
    import torch

    from dali_snapmix.mix import GuidedMixup

    g = torch.Generator().manual_seed(side)
    x, y = torch.randn(6, 3, side, side, generator=g), torch.arange(6)
    want = GuidedMixup(prob=1.0)(x.clone(), y)
    got = guided_sr_authors_style(x.clone(), y)
    assert torch.equal(got.labels, want.labels)
    assert (got.images - want.images).abs().max() <= 1e-4 and (got.weights - want.weights).abs().max() <= 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_puzzlemix_reference_mixes_as_puzzlemix_given_the_same_labels(seed):
    """The PuzzleMix reference row (a full backward in eval mode, gco on the host, the
    transport by 0/1 matrix products) mixes as PuzzleMix does when its solver returns the
    same labels: a stand-in for gco hands back ours, sample by sample."""
    import torch

    from benchmarks.overhead import puzzlemix_authors_style
    from dali_snapmix.mix import PuzzleMix
    from dali_snapmix.models import SmallCNN

    torch.manual_seed(seed)
    model = SmallCNN(4, width=4).train()
    x, y = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 3, 1])
    mix = PuzzleMix(num_classes=4)
    params = mix.sample(x, y, rng=np.random.default_rng(seed))
    params = dataclasses.replace(params, lam=0.3 + 0.1 * seed)  # lam near 0 or 1 would mix nothing
    n = params.block_num
    resolved = mix.resolve(x, y, params, model=model)
    grids = iter(((1 - resolved.masks[:, :: 32 // n, :: 32 // n]) * 2).round().long().numpy())

    class Labels:  # gco.cut_grid_graph's place: our labels, flattened as gco returns them
        @staticmethod
        def cut_grid_graph(unary, pairwise, cost_v, cost_h, algorithm):
            assert unary.dtype == np.int32 and unary.shape == (n, n, 3) and algorithm == "swap"
            return next(grids).reshape(-1)

    want = mix.apply(x.clone(), y, resolved)
    got = puzzlemix_authors_style(x.clone(), y, model, params, gco=Labels, saliency_time=lambda f: f)
    assert torch.equal(got.labels, want.labels) and resolved.w_a.min() < 1  # something was mixed
    assert (got.images - want.images).abs().max() <= 1e-5 and (got.weights - want.weights).abs().max() <= 1e-6


class ExactCut:
    """gco.cut_grid_graph's place in the Co-Mixup reference: every labelling of the (tiny)
    grid, the lowest energy (the first on ties), flattened as gco returns it."""

    calls = 0

    @classmethod
    def cut_grid_graph(cls, unary, pairwise, cost_v, cost_h, algorithm):
        assert unary.dtype == np.float32 and algorithm == "swap"
        cls.calls += 1
        h, w, L = unary.shape
        labs = np.array(list(itertools.product(range(L), repeat=h * w))).reshape(-1, h, w)
        u, pw = unary.astype(np.float64), pairwise.astype(np.float64)
        e = u[np.arange(h)[:, None], np.arange(w)[None], labs].sum((1, 2))
        e += (cost_v.astype(np.float64) * pw[labs[:, :-1], labs[:, 1:]]).sum((1, 2))
        e += (cost_h.astype(np.float64) * pw[labs[:, :, :-1], labs[:, :, 1:]]).sum((1, 2))
        return labs[int(np.argmin(e))].reshape(-1)


# cases where the release's threshold, compatibility scale, half labels, set_resolve and stopping
# rule each change the result (a mistake in any fails one of them)
@pytest.mark.parametrize("seed,thres,omega", [(0, 0.83, 0.001), (0, 0.83, 0.5), (0, 1.2, 0.001), (2, 0.83, 0.5),
                                              (3, 0.6, 0.3), (4, 1.2, 0.001)])
def test_comixup_reference_is_comixup_given_an_exact_solver(seed, thres, omega):
    """The Co-Mixup reference row transcribes the release's loop (its cost, compatibility,
    prior, modular diversity term, half labels, set_resolve, stopping rule, upsampled sum and
    dense targets) with gco in its place; where each output's labelling is solved exactly (2 x 2
    grids, every labelling tried) it must give Co-Mixup's labellings from the same saliency
    (peaked maps in place of the saliency pass), so the images to 1e-5 and the dense targets
    to 1e-6. Groups of 4 and 3 (a short last group), several rounds."""
    import torch

    from benchmarks.overhead import comixup_authors_style
    from dali_snapmix.mix import CoMixup, soft_targets

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    c, s = rng.random((7, 2)) * 32, 32 * (0.1 + 0.2 * rng.random(7))
    sal = torch.from_numpy(np.exp(-((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2) / (2 * s[:, None, None] ** 2))).float()
    x, y = torch.randn(7, 3, 32, 32), torch.tensor([0, 1, 2, 3, 1, 0, 2])
    mix = CoMixup(num_classes=4, part=4, block_num=2, thres=thres, omega=omega)
    params = mix.sample(x, y, rng=rng)
    resolved = mix.masks_from(sal, params)
    want = mix.apply(x.clone(), y, resolved)
    ExactCut.calls = 0
    got = comixup_authors_style(x.clone(), y, None, params, num_classes=4, gco=ExactCut,
                                saliency_time=lambda f: lambda *a, **k: sal.clone(), thres=thres, omega=omega)
    assert ExactCut.calls >= 2 * 7  # two rounds at least
    assert (got.images - want.images).abs().max() <= 1e-5, seed
    assert (soft_targets(got, num_classes=4) - soft_targets(want, num_classes=4)).abs().max() <= 1e-6, seed


def test_guided_ap_reference_is_guided_ap_the_releases_way():
    """The Guided-AP reference row (a full backward, parameter gradients zeroed after) mixes
    as GuidedMixup(variant="ap") does, from the same model."""
    import copy

    import torch

    from dali_snapmix.mix import GuidedMixup
    from dali_snapmix.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(4, width=4).train()
    x, y = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 3, 1])
    want = GuidedMixup(variant="ap", prob=1.0)(x.clone(), y, model=copy.deepcopy(model))
    got = guided_ap_authors_style(x.clone(), y, copy.deepcopy(model))
    assert torch.equal(got.labels, want.labels)
    assert (got.images - want.images).abs().max() <= 1e-4 and (got.weights - want.weights).abs().max() <= 1e-5


@pytest.mark.parametrize("n,side", [(5, 112), (1, 224)])
def test_attentivemix_reference_is_attentivemix_the_unofficial_releases_way(n, side):
    """The AttentiveMix reference row (a forward per partner, numpy's top-k, slice pastes)
    mixes as AttentiveMix does with the same partners, from the same model's CAMs: the
    map is 7 x 7 at 112 px (cells of 16) and 14 x 14 at 224 (grid 14)."""
    import torch

    from dali_snapmix.mix import AttentiveMix
    from dali_snapmix.mix.params import PartnerParams
    from dali_snapmix.models import SmallCNN

    torch.manual_seed(n)
    model = SmallCNN(4, width=4).train()
    x, y = torch.randn(n, 3, side, side), torch.randint(0, 4, (n,))
    perm = torch.randperm(n)
    want = AttentiveMix(grid=side // 16)(x.clone(), y, params=PartnerParams(mix=True, perm=perm), model=model)
    got = attentivemix_authors_style(x.clone(), y, perm, model=model)
    assert torch.equal(got.labels, want.labels) and torch.equal(got.images, want.images)
    assert (got.weights - want.weights).abs().max() <= 1e-7 and model.training


def test_saliency_release_script(capsys):
    """The release's map (the detector on the normalised float32 tensor) against the 8-bit
    image's, on the photograph alone: the script runs and its correlation is recomputed."""
    pytest.importorskip("cv2")
    from benchmarks.saliency_release import main as saliency_release

    (row,) = saliency_release(["--birds", "0", "--size", "96"])
    assert -1.0 <= row["correlation"] <= 1.0 and f"| grace_hopper.jpg | {row['correlation']:+.3f} |" in capsys.readouterr().out


def test_accuracy_benchmark_quick(tmp_path, capsys):
    """--quick on the embedded set, both protocols, three of their methods (each method trains in
    the trainer's own tests; the suite has a 5-minute budget): tables, plot and JSON."""
    import json

    from benchmarks.accuracy import main as accuracy

    pytest.importorskip("timm")
    picked = ["baseline", "snapmix", "snapmix-cached"]
    rep = accuracy(["--quick", "--methods", ",".join(picked), "--out", str(tmp_path / "acc"), "--cache-dir",
                    str(tmp_path / "cache")])
    out = capsys.readouterr().out
    for protocol in ("scratch", "finetune"):
        rows = rep["protocols"][protocol]["summary"]
        assert list(rows) == picked
        for m, r in rows.items():
            assert r["seeds"] == 1, (protocol, m)
            assert f"| {m} | " in out
        hist = rep["protocols"][protocol]["runs"]["snapmix-cached"][0]["history"]
        assert sum(h["cams"]["cached"] for h in hist) > 0  # the cached mode re-projected maps
        for m, r in rows.items():  # each mean, recomputed from the runs' own logs on disk
            logs = sorted((tmp_path / "acc" / protocol / m).glob("seed*/log.jsonl"))
            last3 = [np.mean([h["top1"] for h in map(json.loads, f.read_text().splitlines())
                              if h["top1"] is not None][-3:]) for f in logs]
            assert len(logs) == r["seeds"] and r["top1_mean"] == pytest.approx(np.mean(last3), abs=1e-12), (protocol, m)
    saved = json.loads((tmp_path / "acc" / "accuracy.json").read_text())
    assert saved["protocols"]["finetune"]["summary"].keys() == rep["protocols"]["finetune"]["summary"].keys()
    assert (tmp_path / "acc" / "accuracy.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="unknown"):
        accuracy(["--quick", "--methods", "no-such-mix"])


def test_accuracy_benchmark_embedded_protocol_quick(tmp_path, capsys):
    """The embedded protocol runs its own method list with the demo's recipe."""
    from benchmarks.accuracy import main as accuracy

    pytest.importorskip("timm")
    rep = accuracy(["--quick", "--protocol", "embedded", "--out", str(tmp_path / "acc"), "--cache-dir", str(tmp_path / "c")])
    p = rep["protocols"]["embedded"]
    assert list(p["summary"]) == ["baseline", "cutmix", "snapmix", "snapmix-cached"]
    assert p["settings"]["model"] == "efficientnet_lite0_imagenet" and p["settings"]["channels_last"] is True
    assert "| snapmix-cached | " in capsys.readouterr().out


def test_accuracy_benchmark_scarce_protocol_quick(tmp_path, capsys):
    """The scarce protocol: its methods, the demo's recipe, and the paired per-seed
    differences recomputed from the runs' own scores."""
    from benchmarks.accuracy import main as accuracy

    pytest.importorskip("timm")
    rep = accuracy(["--quick", "--protocol", "scarce", "--out", str(tmp_path / "acc"), "--cache-dir", str(tmp_path / "c")])
    p = rep["protocols"]["scarce"]
    assert list(p["summary"]) == ["baseline", "cutmix", "snapmix", "snapmix-improved"]
    assert p["settings"]["model"] == "efficientnet_lite0_imagenet" and p["settings"]["lr_steps"] == "1"  # quick
    cfg = json.loads((tmp_path / "acc" / "scarce" / "snapmix-improved" / "seed0" / "config.json").read_text())
    assert cfg["snapmix_semantics"] == "improved" and cfg["mix"] == "snapmix"
    s = p["summary"]
    for name, (m, ref) in {"snapmix - cutmix": ("snapmix", "cutmix"), "snapmix - baseline": ("snapmix", "baseline"),
                           "snapmix-improved - baseline": ("snapmix-improved", "baseline")}.items():
        want = s[m]["top1_per_seed"][0] - s[ref]["top1_per_seed"][0]
        assert p["paired"][name]["per_seed"] == [pytest.approx(want, abs=1e-12)], name
    assert "scarce paired, snapmix - cutmix:" in capsys.readouterr().out


def test_label_fidelity_benchmark_quick(tmp_path, capsys):
    """--quick: the sanity row scores zero, the shuffled truth does not, every row is scored
    at both thresholds, the paired rows really pair (area labels on SnapMix's own params
    score the same samples against the same truths) with intervals around their
    difference, and the last line names the four headline errors."""
    from benchmarks.label_fidelity import main as fidelity

    rep = fidelity(["--quick", "--out", str(tmp_path / "lf")])
    out = capsys.readouterr().out.strip().splitlines()
    rows = rep["rows"]
    assert rep["min_share"] == [0.25, 0.01]
    main = {n: r["at"]["0.25"] for n, r in rows.items()}
    # zero up to the float32 rounding of the contract's weights
    assert main["truth (sanity)"]["mae"] < 1e-7 and main["truth (sanity)"]["weights"] > 0
    assert main["shuffled truth"]["mae"] > 0.05
    for name in ("cutmix", "as-cutmix", "resizemix", "fmix", "smoothmix", "samplepairing", "saliencymix", "guided-sr", "guided-ap", "attentivemix",
                 "attentivemix-imagenet", "puzzlemix", "comixup", "automix", "mixed-example: vh-mixup",
                 "mixed-example: column-interval", "mixed-example: random-elements", "area-on-snapmix-boxes", "snapmix", "snapmix @48", "snapmix-lowres",
                 "area-on-improved-boxes", "snapmix-improved", "snapmix-improved @48", "snapmix-cached",
                 "snapmix, cached row's batches", "snapmix, epoch-1 CAMs"):
        r = rows[name]
        w, t, kind, share = (np.asarray(r[k]) for k in ("weight", "truth", "kind", "share"))
        for v in ("0.25", "0.01"):
            sel = share >= float(v)
            err, diff = abs(w - t)[sel], kind[sel] != "same"
            assert r["at"][v]["weights"] == int(sel.sum()) > 0, (name, v)
            # the summaries are the means of the listed weights
            assert r["at"][v]["mae"] == pytest.approx(float(err.mean())), (name, v)
            assert r["at"][v]["mae_diff"] == pytest.approx(float(err[diff].mean())), (name, v)
        assert r["at"]["0.01"]["weights"] >= r["at"]["0.25"]["weights"], name
    snap, area = rows["snapmix"], rows["area-on-snapmix-boxes"]
    assert snap["truth"] == area["truth"] and snap["kind"] == area["kind"]  # the same samples, boxes and truths
    for v, pairs in rep["paired"].items():
        assert set(pairs) == {"snapmix - area-on-snapmix-boxes", "snapmix-improved - area-on-improved-boxes",
                              "snapmix-lowres - snapmix", "snapmix-cached - snapmix"}, v
        for name, d in pairs.items():
            assert d["lo"] <= d["diff"] <= d["hi"] and d["samples"] > 0, (v, name)
    d = rep["paired"]["0.25"]["snapmix - area-on-snapmix-boxes"]
    assert d["mae_x"] == pytest.approx(main["snapmix"]["mae_diff"])
    assert d["mae_y"] == pytest.approx(main["area-on-snapmix-boxes"]["mae_diff"])
    assert d["diff"] == pytest.approx(d["mae_x"] - d["mae_y"])
    last = out[-1].split()
    assert last[:3] == ["label", "error", "snapmix"] and last[4::2] == ["cutmix", "as-cutmix", "area-on-snapmix-boxes"]
    for value, name in zip(last[3::2], ("snapmix", "cutmix", "as-cutmix", "area-on-snapmix-boxes")):
        assert float(value) == pytest.approx(main[name]["mae_diff"], abs=5e-4), name
    assert (tmp_path / "lf" / "label_fidelity.png").stat().st_size > 0


def test_label_fidelity_benchmark_midlevel_rows(tmp_path, capsys):
    """--midlevel: the model trains with the branch, and SnapMix with the branch's CAMs
    (finer than the last stage's) scores the same samples as the snapmix row, paired."""
    from benchmarks.label_fidelity import main as fidelity

    rep = fidelity(["--quick", "--midlevel", "--min-share", "0.25", "--out", str(tmp_path / "lf")])
    rows, pairs = rep["rows"], rep["paired"]["0.25"]
    mid, snap = rows["snapmix, mid-level CAMs"], rows["snapmix"]
    assert mid["truth"] == snap["truth"] and mid["kind"] == snap["kind"]
    (h, w), (h0, w0) = (map(int, r["map"].split("x")) for r in (mid, snap))
    assert h > h0 and w > w0, (mid["map"], snap["map"])
    d = pairs["snapmix, mid-level CAMs - snapmix"]
    assert d["lo"] <= d["diff"] <= d["hi"] and "snapmix-improved, mid-level CAMs - snapmix-improved" in pairs
    assert "snapmix-improved, mid-level CAMs - area-on-improved-boxes" in pairs


def test_gpu_check_reads_the_overhead_table_and_junit(tmp_path, capsys):
    """The GPU check parses overhead.py's printed table: check its parser on a real (CPU,
    tiny) run against the JSON the same run wrote, and its junit reader on a tiny file.
    Without CUDA the check itself says so and exits 0."""
    import json

    from benchmarks.gpu_check import junit, parse_overhead
    from benchmarks.gpu_check import main as gpu_check

    js = tmp_path / "o.json"
    overhead(["--model", "small_cnn", "--crop", "64", "--batch", "4", "--classes", "5", "--repeats", "2",
              "--warmup", "1", "--plot", "", "--json", str(js)])
    rows = parse_overhead(capsys.readouterr().out)
    fig = json.loads(js.read_text())
    assert set(rows) == set(fig["overhead"])
    assert len(rows) == 28 + (opencv_saliency() is not None) + 2 * (importlib.util.find_spec("gco") is not None)
    for m, r in rows.items():
        assert r["overhead_pct"] == pytest.approx(fig["overhead"][m] * 100, abs=0.051), m
        assert r["step_ms"] == pytest.approx(fig["median_s"][m] * 1e3, abs=0.051), m
    x = tmp_path / "j.xml"
    x.write_text('<testsuites><testsuite><testcase classname="a" name="t1" time="0.5"/>'
                 '<testcase classname="a" name="t2" time="1"><skipped message="no CUDA"/></testcase>'
                 '<testcase classname="b" name="t3" time="2"><failure message="boom"/></testcase></testsuite></testsuites>')
    assert [(c["test"], c["outcome"], c["why"]) for c in junit(x)] == [
        ("a::t1", "passed", ""), ("a::t2", "skipped", "no CUDA"), ("b::t3", "failed", "boom")]
    assert gpu_check(["--out", str(tmp_path / "g")]) == 0
    assert "no CUDA device found" in capsys.readouterr().out and not (tmp_path / "g").exists()
