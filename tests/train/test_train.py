"""The trainer end to end on the small embedded set: config handling, logs, resume,
two processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dali_snapmix.config import mixing_on
from dali_snapmix.models import SmallCNN
from dali_snapmix.trainer import Config, build_mixer, logits_and_loss, main, parse_args

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model", "small_cnn", "--resize", "40", "--crop", "32", "--batch-size", "8", "--lr-steps", "2"]


def _independent_scores(run: Path, data: Path) -> tuple[float, float]:
    """(top-1, top-1 of logits + branch logits) of a --midlevel small_cnn run, from its
    saved weights, scored here sample by sample rather than by the trainer's evaluate()."""
    from dali_snapmix.data import ImageSource, TransformSpec, make_loader
    from dali_snapmix.models import MidLevel, build_model, input_normalisation

    cfg = json.loads((run / "config.json").read_text())
    test = ImageSource.from_folder(data / "test")
    backbone = build_model("small_cnn", num_classes=test.num_classes)
    model = MidLevel.on(backbone, test.num_classes)
    model.load_state_dict(torch.load(run / "last.pt", weights_only=False)["model"])
    model.eval()
    mean, std = input_normalisation("small_cnn")
    spec = TransformSpec(resize=cfg["resize"], crop=cfg["crop"], resize_mode=cfg["resize_mode"], mean=mean, std=std)
    loader = make_loader("dali", test, batch_size=5, train=False, spec=spec, device="cpu", seed=0, workers=1)
    right = right_fused = n = 0
    with torch.no_grad():
        for b in loader:
            for x, y in zip(b.images, b.labels.tolist()):
                logits, branch = model(x[None])
                right += int(logits[0].argmax()) == y
                right_fused += int((logits[0].double() + branch[0].double()).argmax()) == y
                n += 1
    assert n == len(test)
    return right / n, right_fused / n


def test_trainer_runs_and_logs(birds, tmp_path):
    out = tmp_path / "run"
    res = main(["--data", str(birds.root), "--epochs", "2", *TINY, "--mix", "snapmix", "--midlevel",
                "--save-samples", "--out", str(out)])
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    top1, fused = _independent_scores(out, birds.root)  # the reported scores, recomputed from last.pt
    assert rows[-1]["top1"] == pytest.approx(top1, abs=1e-12)
    assert rows[-1]["top1_fused"] == pytest.approx(fused, abs=1e-12) and res["top1"] == rows[-1]["top1_fused"]
    assert json.loads((out / "config.json").read_text())["crop"] == 32
    for f in ("samples.png", "accuracy.png", "last.pt", "result.json"):
        assert (out / f).stat().st_size > 0, f
    ck = torch.load(out / "last.pt", weights_only=False)
    # no generator states (each epoch reseeds); the CAM cache/counters and the scaler instead
    assert ck["epoch"] == 2 and "rng" not in ck and {"scaler", "mixer"} <= set(ck) and ck["loader"]["epoch"] == 2


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """An easy set, so that a short run must learn: 4 classes of noisy flat colours."""
    from PIL import Image

    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    rgb = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    for split, n in (("train", 24), ("test", 10)):
        for k, c in enumerate(rgb):
            (root / split / f"c{k}").mkdir(parents=True)
            for i in range(n):
                x = np.clip(np.array(c) + rng.normal(0, 40, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(x).save(root / split / f"c{k}" / f"{i}.jpg", quality=90)
    return root


def test_a_short_run_learns(colours, tmp_path):
    """The loss falls and top-1 ends far above chance (0.25) on a set a small CNN can learn."""
    res = main(["--data", str(colours), "--epochs", "5", *TINY, "--lr", "0.05", "--lr-steps", "4",
                "--mix", "cutmix", "--out", str(tmp_path / "learn")])
    rows = [json.loads(x) for x in (tmp_path / "learn" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"], [r["loss"] for r in rows]
    assert res["top1"] >= 0.75, res


def test_cached_cam_mode_refreshes_on_schedule_and_from_clean_batches(birds, tmp_path):
    out = tmp_path / "cached"
    main(["--data", str(birds.root), "--epochs", "3", *TINY, "--mix", "snapmix", "--mix-prob", "0.5",
          "--cam-cache-every", "2", "--out", str(out)])
    rows = [json.loads(x)["cams"] for x in (out / "log.jsonl").read_text().splitlines()]
    n = 7 * 8  # 60 training images, batches of 8, last partial dropped
    assert all(sum(r.values()) >= n // 2 for r in rows)  # mixed batches + clean batches
    assert rows[0]["cached"] < rows[0]["exact"] + rows[0]["free"]  # epoch 0 fills the cache
    assert rows[1]["exact"] < rows[0]["exact"]  # epoch 1 mostly re-projects
    assert rows[0]["free"] > 0  # clean batches refreshed maps without a pass
    with pytest.raises(SystemExit, match="cam-cache-every"):
        main(["--data", str(birds.root), *TINY, "--cam-cache-every", "-1", "--out", str(tmp_path / "x")])


def test_config_layers_and_bad_values(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("preset: scratch\nmix: cutmix\nepochs: 7\n")
    cfg = parse_args(["--config", str(y), "--epochs", "9"])
    assert (cfg.mix, cfg.epochs, cfg.mix_prob, cfg.lr_steps) == ("cutmix", 9, 0.5, "150,225,270")  # flag > yaml > preset
    assert parse_args([]) == Config()  # the paper's recipe by default
    assert Config().lr_steps == "80,150,180" and Config().batch_size == 16 and Config().crop == 448
    y.write_text("epoch: 3\nmixx: snapmix\n")
    with pytest.raises(SystemExit, match=r"unknown keys \['epoch', 'mixx'\]; valid keys: \[.*'epochs'"):
        parse_args(["--config", str(y)])
    with pytest.raises(SystemExit):
        parse_args(["--mix", "no-such-mix"])  # argparse names the bad choice
    with pytest.raises(SystemExit, match="--crop 500 is larger than --resize 448"):
        parse_args(["--resize", "448", "--crop", "500"])
    with pytest.raises(SystemExit, match="--pretrained: no such file"):
        parse_args(["--pretrained", str(tmp_path / "nope.pth")])


def test_bad_model_and_pretrained_fail_before_training(birds, tmp_path):
    with pytest.raises(SystemExit, match="--model: unknown model 'resnet7'"):
        main(["--data", str(birds.root), *TINY, "--model", "resnet7", "--out", str(tmp_path / "a")])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=f"cannot load pretrained weights from {junk}"):
        main(["--data", str(birds.root), *TINY, "--pretrained", str(junk), "--out", str(tmp_path / "b")])
    good = tmp_path / "other.pth"
    torch.save({"x.weight": torch.zeros(3)}, good)
    with pytest.raises(SystemExit, match="none of its 1 tensors match"):
        main(["--data", str(birds.root), *TINY, "--pretrained", str(good), "--out", str(tmp_path / "c")])


def test_inception_aux_loss_is_weighted():
    import torchvision

    from dali_snapmix.mix import MixedBatch

    torch.manual_seed(0)
    m = torchvision.models.inception_v3(weights=None, num_classes=3, aux_logits=True, init_weights=False).train()
    x = torch.randn(2, 3, 299, 299)  # the auxiliary head needs its native size
    y = torch.tensor([0, 2])
    t = MixedBatch(x, y, y.flip(0), torch.tensor([0.7, 0.6]), torch.tensor([0.3, 0.5]))
    torch.manual_seed(1)
    logits, loss = logits_and_loss(m, x, t, amp="off", tdev=torch.device("cpu"))
    torch.manual_seed(1)
    o = m(x)
    from dali_snapmix.mix import mixed_cross_entropy

    want = mixed_cross_entropy(o.logits, t) + 0.4 * mixed_cross_entropy(o.aux_logits, t)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5) and logits.shape == (2, 3)


def test_the_training_forward_mixes_manifold_mixups_hidden_layer():
    """The trainer's forward (logits_and_loss) under a Manifold Mixup batch: small_cnn
    written out stage by stage with its stage-1 output mixed by hand, the same loss; the
    MidLevel branch's loss included (it reads the backbone's mixed state)."""
    import torch.nn.functional as F

    from dali_snapmix.mix import ManifoldMixup
    from dali_snapmix.mix.manifold import ManifoldParams
    from dali_snapmix.models import MidLevel, SmallCNN

    torch.manual_seed(0)
    m = SmallCNN(3, width=4).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 2, 1, 1])
    p = ManifoldParams(mix=True, perm=torch.tensor([1, 3, 0, 2]), lam=0.3, layer=2)  # "features.1"
    t = ManifoldMixup().apply(x.clone(), y, p, model=m)
    _, loss = logits_and_loss(m, t.images, t, amp="off", tdev=torch.device("cpu"))
    with torch.no_grad():
        h = m.features[1](m.features[0](x))
        h = 0.3 * h + 0.7 * h[p.perm]
        logits = m.fc(torch.flatten(m.pool(m.features[3](m.features[2](h))), 1))
    want = (0.3 * F.cross_entropy(logits, y, reduction="none") + 0.7 * F.cross_entropy(logits, y[p.perm], reduction="none")).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-6)
    branch = MidLevel.on(m, 3).eval()
    _, with_branch = logits_and_loss(branch, t.images, t, amp="off", tdev=torch.device("cpu"))
    _, unmixed = logits_and_loss(branch, t.images, ManifoldMixup().unmixed(x, y), amp="off", tdev=torch.device("cpu"))
    assert with_branch.item() != pytest.approx(unmixed.item(), abs=1e-4) and with_branch.item() > loss.item()


def _run(args, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "train_dali.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_killed_run_resumes_to_the_same_weights(birds, tmp_path):
    # the cached-CAM mode with free refreshes: the cache and its counters must resume too
    args = ["--data", str(birds.root), "--epochs", "3", *TINY, "--mix", "snapmix", "--cam-cache-every", "2",
            "--mix-prob", "0.5"]
    full = _run([*args, "--out", str(tmp_path / "full")])
    cut = _run([*args, "--out", str(tmp_path / "cut")])
    ckpt = tmp_path / "cut" / "last.pt"  # written atomically at the end of each epoch
    deadline = time.time() + 300
    while time.time() < deadline and cut.poll() is None and not ckpt.exists():
        time.sleep(0.1)
    assert cut.poll() is None, "the run ended before it could be killed"
    cut.send_signal(signal.SIGKILL)
    cut.wait()
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["epoch"] in (1, 2)
    res = _run([*args, "--out", str(tmp_path / "cut"), "--resume", str(tmp_path / "cut" / "last.pt")])
    out_res, out_full = res.communicate(timeout=600)[0], full.communicate(timeout=600)[0]
    assert res.returncode == 0, out_res
    assert full.returncode == 0, out_full
    ca = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    cb = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    a, b = ca["model"], cb["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ca["mixer"]["cache_stats"] == cb["mixer"]["cache_stats"]
    assert [r["cams"] for r in ca["history"]] == [r["cams"] for r in cb["history"]]
    # resuming with another config is refused, before any training (in this process: a fourth
    # interpreter would cost seconds of imports)
    with pytest.raises(SystemExit, match=r"different config.*'lr': \(0.01, 0.5\)"):
        main([*args, "--out", str(tmp_path / "cut"), "--resume", str(tmp_path / "cut" / "last.pt"), "--lr", "0.5"])
    assert torch.equal(torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"][k], b[k])  # untouched


def _torchrun(args, port, timeout=600, script=ROOT / "train_dali.py"):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), str(script), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_processes_see_disjoint_samples_and_share_the_cam_cache(birds, tmp_path, free_port):
    """2 gloo processes under torchrun, SnapMix's cached mode (batch 5 each): every epoch
    the ranks see disjoint halves covering the 60 images, only rank 0 reports, and they
    count as many exact CAM passes per epoch as one process (batch 10) on the same images:
    each rank gets the maps the other computed. Without sharing, epoch 2 would redo about
    half of them. (One run for both: the disjoint-samples test of a CutMix run was merged
    in here, to keep make test within its 5 minutes.)"""
    common = ["--data", str(birds.root), "--epochs", "3", *TINY, "--mix", "snapmix", "--mix-prob", "1",
              "--cam-cache-every", "2", "--workers", "1"]
    main([*common, "--batch-size", "10", "--out", str(tmp_path / "one")])
    p = _torchrun([*common, "--batch-size", "5", "--out", str(tmp_path / "two")], free_port,
                  script=ROOT / "tests" / "train" / "train_recording_indices.py")  # the trainer with an on_batch hook
    assert p.returncode == 0, p.stdout + p.stderr
    for epoch in range(3):
        r0 = json.loads((tmp_path / "two" / f"indices_rank0_epoch{epoch}.json").read_text())
        r1 = json.loads((tmp_path / "two" / f"indices_rank1_epoch{epoch}.json").read_text())
        assert not set(r0) & set(r1)
        assert len(r0) == len(r1) == 30 and sorted(r0 + r1) == list(range(60))  # 30 per rank: no drop
    assert "RESULT" in p.stdout and p.stdout.count("RESULT") == 1  # only rank 0 reports
    one = [json.loads(x)["cams"] for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    two = [json.loads(x)["cams"] for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert one == two, (one, two)
    # 60 images, none dropped: exact in epoch 1, re-projected in 2, due again in 3
    assert [r["exact"] for r in one] == [60, 0, 60] and one[1]["cached"] == 60, one


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(birds, tmp_path):
    out = tmp_path / "nan"
    args = ["--data", str(birds.root), "--epochs", "3", *TINY, "--mix", "baseline", "--out", str(out)]
    # the learning rate jumps by 1e30 after the first epoch: the loss blows up in epoch 2
    with pytest.raises(SystemExit, match=r"loss is (nan|inf) at step \d+ \(epoch 2\); the last good checkpoint is"):
        main([*args, "--lr-steps", "1", "--lr-gamma", "1e30"])
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_mix_warmup_trains_the_first_epochs_unmixed(birds, tmp_path):
    """--mix-warmup 1: epoch 1 is a baseline epoch, bit for bit; mixing starts in epoch 2."""
    common = ["--data", str(birds.root), "--epochs", "2", *TINY, "--keep-checkpoints", "1"]
    main([*common, "--mix", "cutmix", "--mix-warmup", "1", "--out", str(tmp_path / "warm")])
    main([*common, "--mix", "baseline", "--out", str(tmp_path / "base")])
    a = torch.load(tmp_path / "warm" / "epoch1.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "base" / "epoch1.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    a2 = torch.load(tmp_path / "warm" / "last.pt", weights_only=False)["model"]
    b2 = torch.load(tmp_path / "base" / "last.pt", weights_only=False)["model"]
    assert not all(torch.equal(a2[k], b2[k]) for k in a2)  # epoch 2 mixed
    rows = [json.loads(x) for x in (tmp_path / "warm" / "log.jsonl").read_text().splitlines()]
    assert rows[0]["mix_s"] < rows[1]["mix_s"]
    with pytest.raises(SystemExit, match=r"--mix-warmup must be in \[0, --epochs 2\), got 2"):
        parse_args([*common, "--mix-warmup", "2"])
    with pytest.raises(SystemExit, match=r"--keep-checkpoints: epochs must be in \[1, 2\], got '0,1'"):
        parse_args(["--epochs", "2", "--keep-checkpoints", "0,1"])


def test_label_fidelity_after_training(birds, tmp_path, capsys):
    """--label-fidelity scores the trained method's labels on the test split's part masks;
    a method that pastes nothing has no label error; a set without masks is refused."""
    res = main(["--data", str(birds.root), "--epochs", "1", *TINY, "--mix", "snapmix", "--label-fidelity",
                "--save-samples", "--out", str(tmp_path / "s")])
    lf = res["label_error"]
    assert 0.0 < lf["mae_diff"] < 1.5 and 0.0 < lf["mae"] < 3.0 and 0.0 <= lf["lies"] <= 1.0 and lf["weights"] > 0 and lf["mixed"] > 0
    assert "label fidelity (snapmix" in capsys.readouterr().out
    assert (tmp_path / "s" / "samples.png").stat().st_size > 0
    res = main(["--data", str(birds.root), "--epochs", "1", *TINY, "--mix", "baseline", "--label-fidelity",
                "--out", str(tmp_path / "b")])
    assert res["label_error"] is None
    with pytest.raises(SystemExit, match=f"--data {tmp_path} has no parts/ folder"):
        parse_args(["--data", str(tmp_path), "--label-fidelity"])


def test_a_new_head_under_a_pretrained_body_starts_at_zero(birds, tmp_path):
    """--pretrained from a 5-class model: the body loads, the 12-class head (shape differs)
    is zeroed; with learning rate 0 the saved weights show both."""
    from dali_snapmix.models import SmallCNN

    torch.manual_seed(3)
    pre = SmallCNN(5)
    path = tmp_path / "pre.pth"
    torch.save(pre.state_dict(), path)
    out = tmp_path / "ft"
    main(["--data", str(birds.root), "--epochs", "1", *TINY, "--mix", "baseline", "--pretrained", str(path),
          "--lr", "0", "--lr-pretrained", "0", "--weight-decay", "0", "--out", str(out)])
    sd = torch.load(out / "last.pt", weights_only=False)["model"]
    assert torch.count_nonzero(sd["fc.weight"]) == 0 and torch.count_nonzero(sd["fc.bias"]) == 0
    assert torch.equal(sd["features.0.0.weight"], pre.state_dict()["features.0.0.weight"])


def test_channels_last_runs_on_the_cpu(birds, tmp_path, monkeypatch):
    """--channels-last converts the model and every training batch it is fed."""
    from dali_snapmix import trainer

    layouts = []
    real = trainer.logits_and_loss

    def spy(model, images, target, **kw):
        layouts.append(images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous())
        return real(model, images, target, **kw)

    monkeypatch.setattr(trainer, "logits_and_loss", spy)
    out = tmp_path / "cl"
    main(["--data", str(birds.root), "--epochs", "1", *TINY, "--mix", "cutmix", "--channels-last", "--out", str(out)])
    sd = torch.load(out / "last.pt", weights_only=False)["model"]
    assert sd["features.0.0.weight"].is_contiguous(memory_format=torch.channels_last)
    assert len(layouts) == 7 and all(layouts)


@pytest.mark.parametrize("argv, message", [
    (["--mix", "cutmix", "--mix-prob", "-0.3"], r"--mix-prob must be in \[0, 1\], got -0.3"),
    (["--mix", "cutmix", "--mix-beta", "0"], r"--mix-beta must be > 0, got 0.0"),
    (["--mix", "cutmix", "--mix-beta", "-1"], r"--mix-beta must be > 0, got -1.0"),
    (["--mix", "cutout", "--mix-beta", "2"], r"--mix-beta 2.0 does not apply to --mix cutout: it applies to"),
    (["--mix", "baseline", "--mix-prob", "0.5"], r"--mix-prob 0.5 does not apply to --mix baseline"),
    (["--mix", "cutmix", "--cam-resolution", "0.5"], r"--cam-resolution 0.5 does not apply to --mix cutmix"),
    (["--compare", "baseline,cutmix", "--cam-cache-every", "2"], r"--cam-cache-every 2 does not apply to --compare"),
    (["--mix", "snapmix", "--cam-resolution", "0"], r"--cam-resolution must be in \(0, 1\], got 0.0"),
    (["--amp", "fp16", "--device", "cpu"], r"--amp fp16 needs a GPU"),
])
def test_flags_that_would_change_nothing_or_mislead_are_refused(argv, message):
    with pytest.raises(SystemExit, match=message):
        parse_args(argv)


def test_method_options_unset_mean_the_method_default():
    from dali_snapmix.trainer import build_mixer, for_method

    cfg = parse_args(["--preset", "scratch", "--mix", "baseline"])  # the preset's mix_prob is for the others
    assert cfg.mix_prob is None
    m = build_mixer(parse_args(["--mix", "cutmix"]), 4, 10, torch.device("cpu"))
    assert (m.prob, m.beta) == (1.0, 3.0)  # the defaults of SnapMix's experiments (mix/cutmix.py)
    m = build_mixer(parse_args(["--mix", "cutmix", "--mix-prob", "0.25", "--mix-beta", "3"]), 4, 10, torch.device("cpu"))
    assert (m.prob, m.beta) == (0.25, 3.0)
    both = parse_args(["--compare", "baseline,cutmix", "--mix-prob", "0.5"])  # applies to cutmix
    assert for_method(both, "baseline").mix_prob is None and for_method(both, "cutmix").mix_prob == 0.5
    with pytest.raises(SystemExit, match=r"--mix baseline takes no --mix-prob \(got 0.5\)"):
        build_mixer(Config(mix="baseline", mix_prob=0.5), 4, 10, torch.device("cpu"))


def test_bce_and_clean_lam_gradients_are_the_releases():
    """The step's loss under --loss bce --clean-lam 0.7: BCE(softmax) of the mixed batch +
    0.7 x 2/C x the clean batch's CE, written out here with plain ops; same gradients."""
    from dali_snapmix.mix import CutMix
    from dali_snapmix.models import SmallCNN
    from dali_snapmix.trainer import clean_loss

    torch.manual_seed(0)
    model, C = SmallCNN(5, width=4).train(), 5
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    clean = x.clone()
    target = CutMix(seed=0)(x, y)
    total = logits_and_loss(model, target.images, target, amp="off", tdev=torch.device("cpu"), loss="bce")[1]
    total = total + clean_loss(model, clean, y, weight=0.7, loss="bce", amp="off", tdev=torch.device("cpu"))
    got = torch.autograd.grad(total, list(model.parameters()))
    p = torch.softmax(model(target.images), 1)
    t = torch.zeros(6, C)
    t[torch.arange(6), target.y_a] += target.w_a
    t[torch.arange(6), target.y_b] += target.w_b
    bce = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    ce = -torch.log_softmax(model(clean), 1)[torch.arange(6), y].mean()
    want = torch.autograd.grad(bce + 0.7 * 2 / C * ce, list(model.parameters()))
    for g, w in zip(got, want):
        assert (g - w).abs().max() <= 1e-6 * max(1.0, float(w.abs().max()))


def test_clean_lam_adds_the_clean_batchs_loss_to_each_step(birds, tmp_path):
    """--mix cutmix --mix-prob 0 --clean-lam 1: every step's loss is the clean CE twice (the
    unmixed batch's and the clean term), so with no weight decay the parameters are those
    of a baseline run at twice the learning rate, bit for bit (BatchNorm's running
    statistics see the clean batch once more); --clean-lam with baseline alone is refused."""
    common = ["--data", str(birds.root), "--epochs", "1", *TINY, "--weight-decay", "0"]
    main([*common, "--mix", "cutmix", "--mix-prob", "0", "--clean-lam", "1", "--out", str(tmp_path / "c")])
    main([*common, "--mix", "baseline", "--lr", "0.02", "--out", str(tmp_path / "b")])
    a = torch.load(tmp_path / "c" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    params = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(a[k], b[k]) for k in params)
    assert not torch.equal(a["features.0.1.running_mean"], b["features.0.1.running_mean"])
    with pytest.raises(SystemExit, match="--clean-lam 0.5 adds the clean batch's loss to mixed steps"):
        parse_args(["--mix", "baseline", "--clean-lam", "0.5"])
    with pytest.raises(SystemExit, match="--clean-lam must be >= 0, got -1.0"):
        parse_args(["--mix", "cutmix", "--clean-lam", "-1"])


def test_a_checkpoint_from_before_a_setting_existed_resumes_with_its_default(birds, tmp_path):
    """A checkpoint written before --loss and --clean-lam existed (its config lacks them)
    resumes under their defaults, and is refused under another value."""
    common = ["--data", str(birds.root), *TINY, "--epochs", "2", "--mix", "cutmix"]
    main([*common, "--keep-checkpoints", "1", "--out", str(tmp_path / "full")])
    ck = torch.load(tmp_path / "full" / "epoch1.pt", weights_only=False)
    del ck["config"]["loss"], ck["config"]["clean_lam"]
    torch.save(ck, tmp_path / "old.pt")
    main([*common, "--out", str(tmp_path / "r"), "--resume", str(tmp_path / "old.pt")])
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "r" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit, match=r"different config: \{'loss': \('ce', 'bce'\)\}"):
        main([*common, "--loss", "bce", "--out", str(tmp_path / "r2"), "--resume", str(tmp_path / "old.pt")])


def test_attentivemix_takes_its_fixed_network_from_a_local_file(tmp_path):
    """--attentive-model NAME --attentive-weights PATH: the network built with 1000
    classes, its body loaded, frozen in eval mode, with its own normalisation; refused
    without weights, with weights that miss a body tensor, and weights without a network."""
    from dali_snapmix.models import SmallCNN, input_normalisation
    from dali_snapmix.trainer import build_mixer

    net = SmallCNN(1000)
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}  # the classifier may be absent
    torch.save(sd, tmp_path / "w.pt")
    cfg = parse_args(["--mix", "attentivemix", "--model", "resnet18", "--attentive-model", "small_cnn",
                      "--attentive-weights", str(tmp_path / "w.pt"), "--attentive-k", "4"])
    m = build_mixer(cfg, 4, 10, torch.device("cpu"))
    fixed = m.attention_model
    assert isinstance(fixed, SmallCNN) and not fixed.training and m.k == 4
    assert all(torch.equal(fixed.state_dict()[k], v) for k, v in sd.items())
    assert not any(p.requires_grad for p in fixed.parameters())
    assert (m.attention_mean, m.attention_std) == input_normalisation("small_cnn")
    assert build_mixer(parse_args(["--mix", "attentivemix"]), 4, 10, torch.device("cpu")).attention_model is None
    with pytest.raises(SystemExit, match="needs its pretrained weights"):
        build_mixer(parse_args(["--mix", "attentivemix", "--attentive-model", "small_cnn"]), 4, 10, torch.device("cpu"))
    torch.save({k: v for k, v in sd.items() if not k.startswith("features.3.")}, tmp_path / "part.pt")
    with pytest.raises(SystemExit, match=r"part.pt lacks 10 tensors of small_cnn's body \(first: features.3.0.weight\)"):
        build_mixer(parse_args(["--mix", "attentivemix", "--attentive-model", "small_cnn", "--attentive-weights",
                                str(tmp_path / "part.pt")]), 4, 10, torch.device("cpu"))
    with pytest.raises(SystemExit, match="--attentive-weights .* needs --attentive-model"):
        parse_args(["--mix", "attentivemix", "--attentive-weights", str(tmp_path / "w.pt")])
    with pytest.raises(SystemExit, match="--attentive-k 3 does not apply to --mix cutmix"):
        parse_args(["--mix", "cutmix", "--attentive-k", "3"])


def test_bf16_autocast_runs_on_the_cpu():
    from dali_snapmix.mix import MixedBatch
    from dali_snapmix.models import SmallCNN

    torch.manual_seed(0)
    m, x, y = SmallCNN(3), torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    t = MixedBatch(x, y, y, torch.ones(2), torch.zeros(2))
    logits, loss = logits_and_loss(m, x, t, amp="bf16", tdev=torch.device("cpu"))
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    ref, _ = logits_and_loss(m, x, t, amp="off", tdev=torch.device("cpu"))
    assert ref.dtype == torch.float32
    torch.testing.assert_close(logits.float(), ref, atol=0.05, rtol=0.05)  # bf16: 8 mantissa bits


def test_mix_schedule_warmup_cycles_and_cooldown():
    """SamplePairing's schedule, for any method: off, then ON/OFF cycles from the warmup's end, then off."""
    cfg = parse_args(["--epochs", "20", "--mix-warmup", "3", "--mix-cycle", "4,2", "--mix-cooldown", "2"])
    on = [e for e in range(20) if mixing_on(cfg, e)]
    assert on == [3, 4, 5, 6, 9, 10, 11, 12, 15, 16, 17]
    assert all(mixing_on(parse_args(["--epochs", "5"]), e) for e in range(5))
    assert [mixing_on(parse_args(["--epochs", "4", "--mix-cycle", "1,0"]), e) for e in range(4)] == [True] * 4
    with pytest.raises(SystemExit, match=r"--mix-cycle must be ON,OFF \(two epoch counts\), got '8'"):
        parse_args(["--mix-cycle", "8"])
    with pytest.raises(SystemExit, match=r"--mix-cycle must have ON >= 1 and OFF >= 0, got '0,2'"):
        parse_args(["--mix-cycle", "0,2"])
    with pytest.raises(SystemExit, match=r"--mix-cooldown must be in \[0, --epochs - --mix-warmup = 2\), got 2"):
        parse_args(["--epochs", "4", "--mix-warmup", "2", "--mix-cooldown", "2"])


def test_puzzlemix_saliency_pass_follows_clean_lam_as_its_release():
    """Its release runs the saliency pass in eval mode only when no clean loss is kept."""
    from dali_snapmix.trainer import build_mixer

    dev = torch.device("cpu")
    assert build_mixer(parse_args(["--mix", "puzzlemix"]), 4, 10, dev).saliency_bn == "eval"
    assert build_mixer(parse_args(["--mix", "puzzlemix", "--clean-lam", "1"]), 4, 10, dev).saliency_bn == "train"
    # its image smoothness un-normalises with the model's statistics
    assert build_mixer(parse_args(["--mix", "puzzlemix", "--model", "resnet18"]), 4, 10, dev).mean == (0.485, 0.456, 0.406)
    assert build_mixer(parse_args(["--mix", "puzzlemix", "--model", "efficientnet_lite0_imagenet"]), 4, 10, dev).std == (0.5,) * 3


def test_comixup_options_and_saliency_pass_as_its_release():
    """Co-Mixup: eval-mode saliency without a clean loss, train mode with one (its release's
    clean_lam); --comix-part and --comix-block-num reach it and are refused by other methods."""
    from dali_snapmix.trainer import build_mixer

    dev = torch.device("cpu")
    mix = build_mixer(parse_args(["--mix", "comixup"]), 4, 10, dev)
    assert (mix.saliency_bn, mix.part, mix.block_num) == ("eval", 20, 4)
    mix = build_mixer(parse_args(["--mix", "comixup", "--clean-lam", "1", "--comix-part", "8", "--comix-block-num", "-1"]),
                      4, 10, dev)
    assert (mix.saliency_bn, mix.part, mix.block_num) == ("train", 8, -1)
    with pytest.raises(SystemExit, match="--mix comixup: part .* 0"):
        build_mixer(parse_args(["--mix", "comixup", "--comix-part", "0"]), 4, 10, dev)
    with pytest.raises(SystemExit, match="comix-part"):
        parse_args(["--mix", "cutmix", "--comix-part", "8"])


def _teacher_score(state: dict, data: Path) -> float:
    """Top-1 of a small_cnn with ``state`` on the test split of ``data``, image by image."""
    from dali_snapmix.data import ImageSource, TransformSpec, make_loader
    from dali_snapmix.models import build_model, input_normalisation

    test = ImageSource.from_folder(data / "test")
    model = build_model("small_cnn", num_classes=test.num_classes)
    model.load_state_dict(state)
    model.eval()
    mean, std = input_normalisation("small_cnn")
    loader = make_loader("dali", test, batch_size=5, train=False, spec=TransformSpec(resize=40, crop=32, mean=mean, std=std),
                         device="cpu", seed=0, workers=1)
    with torch.no_grad():
        right = sum(int(model(x[None])[0].argmax()) == y for b in loader for x, y in zip(b.images, b.labels.tolist()))
    return right / len(test)


def test_automix_trains_resumes_bit_identical_and_scores_its_labels(birds, tmp_path, monkeypatch):
    """--mix automix: each step adds its one-hot loss (weight 1) and the teacher follows
    after it (the clock ends at every step of the run); resumed from its epoch-1 checkpoint
    (what a kill after epoch 1 leaves: last.pt is written atomically, see
    test_killed_run_resumes_to_the_same_weights) the run ends with the same classifier,
    teacher, Mix Block and Mix Block optimiser, bit for bit; the sample grid and the label
    fidelity mix with the trained Mix Block; --clean-lam is refused."""
    import dali_snapmix.trainer as trainer

    weights, real = [], trainer.clean_loss
    monkeypatch.setattr(trainer, "clean_loss", lambda *a, **kw: weights.append(kw["weight"]) or real(*a, **kw))
    common = ["--data", str(birds.root), *TINY, "--epochs", "2", "--mix", "automix"]
    main([*common, "--keep-checkpoints", "1", "--out", str(tmp_path / "full")])
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    steps = full["mixer"]["step"]
    assert steps > 0 and steps % 2 == 0 and len(weights) == steps and set(weights) == {1.0}
    assert torch.load(tmp_path / "full" / "epoch1.pt", weights_only=False)["mixer"]["step"] == steps // 2
    teacher, student = full["mixer"]["teacher"], full["model"]
    assert teacher.keys() == student.keys() and not torch.equal(teacher["fc.weight"], student["fc.weight"])
    rows = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["top1_teacher"] == _teacher_score(teacher, birds.root)  # the EMA teacher's top-1, logged
    res = main([*common, "--out", str(tmp_path / "r"), "--resume", str(tmp_path / "full" / "epoch1.pt"),
                "--save-samples", "--label-fidelity"])
    again = torch.load(tmp_path / "r" / "last.pt", weights_only=False)
    for part in ("teacher", "block"):
        assert all(torch.equal(v, again["mixer"][part][k]) for k, v in full["mixer"][part].items()), part
    assert all(torch.equal(v, again["model"][k]) for k, v in student.items())
    assert again["mixer"]["step"] == steps
    assert all(torch.equal(s["momentum_buffer"], again["mixer"]["optimizer"]["state"][i]["momentum_buffer"])
               for i, s in full["mixer"]["optimizer"]["state"].items())
    assert res["label_error"]["weights"] > 0 and (tmp_path / "r" / "samples.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="--clean-lam 1.0 does not apply to --mix automix"):
        parse_args(["--mix", "automix", "--clean-lam", "1"])
    with pytest.raises(SystemExit, match=r"--automix-momentum must be in \[0, 0.99999\] .*got 1.0"):
        parse_args(["--mix", "automix", "--automix-momentum", "1"])
    with pytest.raises(SystemExit, match="--automix-momentum 0.9 does not apply to --mix cutmix"):
        parse_args(["--mix", "cutmix", "--automix-momentum", "0.9"])


def test_automix_options_reach_it():
    """--automix-momentum and --mix-beta reach AutoMix; its teacher is the model's weights
    on another instance, its Mix Block on the stride-8 stage of small_cnn (mid_layer)."""
    model = SmallCNN(4)
    mix = build_mixer(parse_args(["--mix", "automix", "--model", "small_cnn", "--automix-momentum", "0.99",
                                  "--mix-beta", "1.5"]), 4, 10, torch.device("cpu"), model=model, steps_per_epoch=3)
    assert (mix.base_momentum, mix.beta, mix.total_steps) == (0.99, 1.5, 200 * 3)
    assert mix.teacher is not model and all(torch.equal(a, b) for a, b in zip(mix.teacher.state_dict().values(),
                                                                               model.state_dict().values()))
    assert mix.block.query.in_channels == model.features[2][3].out_channels + 1  # its stage's channels and lam
    with pytest.raises(SystemExit, match="--mix automix needs the classifier it follows"):
        build_mixer(parse_args(["--mix", "automix"]), 4, 10, torch.device("cpu"))


def test_automix_under_two_processes_keeps_one_mix_block(birds, tmp_path, free_port):
    """2 gloo processes, each mixing its own batches: the Mix Block's gradients are averaged
    and the teacher's statistics broadcast, so every process ends with the same Mix Block,
    optimiser and teacher, bit for bit (rank 0's checkpoint is each one's state), and one
    that the processes' own batches moved."""
    args = ["--data", str(birds.root), "--epochs", "1", *TINY, "--batch-size", "4", "--mix", "automix", "--workers", "1",
            "--out", str(tmp_path / "two")]
    p = _torchrun(args, free_port, script=ROOT / "tests" / "train" / "train_saving_mixer.py")
    assert p.returncode == 0, p.stdout + p.stderr
    r0, r1 = (torch.load(tmp_path / "two" / f"mixer_rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["step"] == r1["step"] > 0
    for part in ("block", "teacher"):
        assert all(torch.equal(v, r1[part][k]) for k, v in r0[part].items()), part
    assert all(torch.equal(s["momentum_buffer"], r1["optimizer"]["state"][i]["momentum_buffer"])
               for i, s in r0["optimizer"]["state"].items())
    start = build_mixer(parse_args(["--mix", "automix", "--model", "small_cnn"]), 12, 10, torch.device("cpu"),
                        model=SmallCNN(12), steps_per_epoch=1)
    assert not torch.equal(start.block.value.weight, r0["block"]["value.weight"])  # it trained
