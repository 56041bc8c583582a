"""Label fidelity: do SnapMix's label weights tell the truth more often than CutMix's?

    python benchmarks/label_fidelity.py                     # fine-tunes Lite0 (the demo recipe, SnapMix), then scores
    python benchmarks/label_fidelity.py --checkpoint runs/demo/snapmix/last.pt   # a model the demo saved
    python benchmarks/label_fidelity.py --quick             # tiny set, SmallCNN, 2 epochs (CI smoke run)

The embedded set's generator knows where each image's class-deciding parts are (its
part masks). Mixed batches are drawn from the test split (random crops and flips, as
in training), each method labels them, and each label weight is compared with the
share of the sample's parts that the mixed image really shows (dali_snapmix/fidelity.py):
t_a = own parts left visible outside the target box, t_b = partner's parts inside the
source box; a same-label pair's class gets t_a + t_b.

Every weight is scored on what the loss applies; the headline is the different-label
pairs, where every rule's weights mean the same thing (a same-label pair's class gets
w_a + w_b from the loss, twice what SnapMix's released rule states: that claim is shown
beside it).

Rows: CutMix, asymmetric CutMix, ResizeMix and SaliencyMix (area labels, their own boxes
and partners);
FMix, SmoothMix, Guided-SR and Guided-AP (mask-mass labels; a pixel of weight m shows m of one image's parts and
1 - m of the other's), SamplePairing ((1, 0) on a half-half blend) and every variant of
the mixed-example family (area labels; a per-element mask shows a pixel's parts by the
mean of its channels' weights); area
labels on SnapMix's own params (the same partners and boxes as the snapmix row: the
labelling rule alone differs); SnapMix exact at the training crop and at larger crops of
the same model (finer CAMs), its low-resolution mode, its cached mode (maps one epoch
old: the previous epoch's crops, the previous epoch's model), its improved semantics
(per-sample boxes, eval-mode CAMs, no self-pairs; with area labels on its params
beside it), and SnapMix with the CAMs of the model after its first epoch; a sanity row
(weights = the truth: zero error, up to the float32 rounding of the label contract's
weights) and a shuffled-truth row (the truth of another sample of the batch: the error
of a useless label). Co-Mixup's outputs mix several inputs: each input an output uses is
scored as a different-label weight (its block share against the share of its parts the
output shows; inputs of one class together as a same-label weight; ``fidelity.group_label_errors``).
AutoMix's masks come from its learned Mix Block: here it is trained for ``--automix-epochs``
epochs of the training split against a frozen copy of the scored model as its teacher
(where the release's teacher ends, its momentum near 1), the model itself untouched; its
labels are the sampled lam (mask-mean truth: mask-mass scoring as FMix).
Not scored: CutOut and RICAP (no pair), Manifold Mixup (it mixes
hidden states: no part of the image belongs to either label). Each row also gets its own useless reference (its different-label
weights against its truths in every order) and the skill, its error over that: a row
whose truths spread less (a soft mask) has smaller errors for that reason alone. Paired differences, each over the same samples with a bootstrap
95 % interval: SnapMix - area on its boxes (released and improved), low-res - exact,
cached - exact (exact re-scored on the cached row's batches). Each figure at every
``--min-share`` (0.25 and 0.01 by default: how much of a sample's parts its crop must
hold to be scored). Prints the tables and a last line
``label error snapmix X cutmix Y as-cutmix Z area-on-snapmix-boxes W`` (different-label
mean absolute errors at the first --min-share); writes label_fidelity.json (every
number, every weight) and label_fidelity.png (weight against truth, one panel per row)
into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dali_snapmix.config import BIRDS, parse_args
from dali_snapmix.data import ImageSource, TransformSpec, ensure_synthetic_birds, make_loader
from dali_snapmix.fidelity import LIE, PartMasks, left_out, measure, paired, part_truth, snapshot, summarise
from dali_snapmix.mix import (
    AttentiveMix,
    AutoMix,
    BoxParams,
    CAMCache,
    CoMixup,
    CutMix,
    FMix,
    GuidedMixup,
    MixedBatch,
    MixedExample,
    MixMethod,
    PuzzleMix,
    ResizeMix,
    SaliencyMix,
    SamplePairing,
    SmoothMix,
    SnapMix,
)
from dali_snapmix.mix.mixed_example import VARIANTS as MIXED_EXAMPLE_VARIANTS
from dali_snapmix.mix.params import paste_boxes
from dali_snapmix.models import MidLevel, build_model, fixed_attention, input_normalisation
from dali_snapmix.seeding import generator
from dali_snapmix.trainer import train


@dataclass(frozen=True)
class ShuffledBoxParams(BoxParams):
    """SnapMix's boxes, and the permutation that hands each sample another's truth."""

    shuffle: torch.Tensor | None = None


class TruthLabels(MixMethod):
    """SnapMix's boxes and pairing, labelled with the truth itself (sanity: zero error),
    or with the truth of another sample of the batch (``shuffle``: a useless label):
    w_a = t_a, w_b = t_b, so a same-label pair's class gets t_a + t_b from the loss."""

    params_type = BoxParams

    def __init__(self, *, masks: PartMasks, shuffle: bool, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.masks, self.shuffle, self.boxes = masks, shuffle, SnapMix()
        self.name = "shuffled-truth" if shuffle else "truth"

    def _sample(self, images, labels, rng):
        p = self.boxes.sample(images, labels, rng=rng)
        shuffle = torch.from_numpy(rng.permutation(len(labels))) if self.shuffle else None
        return ShuffledBoxParams(mix=p.mix, perm=p.perm, src_box=p.src_box, dst_box=p.dst_box, shuffle=shuffle)

    def _apply(self, images, labels, params, *, model=None, backend="auto", geometry=None) -> MixedBatch:
        cov, held = self.masks.in_crops(geometry, images.shape[-1])
        t = part_truth(cov, held, labels, params)
        t_a, t_b = t.t_a, t.t_b
        if params.shuffle is not None:
            t_a, t_b = t_a[params.shuffle], t_b[params.shuffle]
        paste_boxes(images, params, backend=backend, tag=self.name)
        y = labels.to(torch.int64)
        return MixedBatch(images, y, y[params.perm], t_a.float(), t_b.float())


class AreaLabels(MixMethod):
    """Another method's params (SnapMix's partners and boxes), labelled by area as
    asymmetric CutMix labels its own: the labelling rule is all that differs from the
    method's row, so the two pair sample by sample."""

    params_type = BoxParams

    def __init__(self, boxes: MixMethod, *, name: str) -> None:
        super().__init__(seed=0)
        self.boxes, self.area, self.name = boxes, CutMix(asymmetric=True), name

    def _sample(self, images, labels, rng):
        return self.boxes.sample(images, labels, rng=rng)

    def _apply(self, images, labels, params, *, model=None, backend="auto", geometry=None) -> MixedBatch:
        return self.area._apply(images, labels, params, backend=backend)


def load_model(path: Path, num_classes: int) -> tuple[torch.nn.Module, dict, MidLevel | None]:
    """(backbone, training config, the backbone with its mid-level branch if it has one)."""
    if not path.is_file():
        raise SystemExit(f"--checkpoint: no such file {path}")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ck.get("config") if isinstance(ck, dict) else None
    if cfg is None or "model" not in ck:
        raise SystemExit(f"--checkpoint {path}: not a checkpoint written by train_dali.py")
    model = build_model(cfg["model"], num_classes=num_classes)
    branch = None
    if cfg.get("midlevel"):
        branch = MidLevel.on(model, num_classes)
    (branch or model).load_state_dict(ck["model"])
    return model, cfg, branch


def train_model(a, data_root: Path, out: Path) -> Path:
    """The demo recipe (or a tiny one with --quick), keeping the checkpoints of epoch 1 (the
    early-CAM row) and of the epoch before the last (the cached row's one-epoch-old maps)."""
    if a.quick:
        argv = ["--data", str(data_root), "--model", "small_cnn", "--resize", "40", "--crop", "32", "--epochs", "2",
                "--batch-size", "8", "--lr", "0.05", "--lr-steps", "1"]
    else:
        argv = ["--preset", "demo"] + (["--epochs", str(a.epochs)] if a.epochs else [])
    argv += ["--mix", a.train_mix, "--out", str(out), "--device", a.device]
    if a.seed is not None:
        argv += ["--seed", str(a.seed)]
    if a.midlevel:
        argv += ["--midlevel"]
    epochs = parse_args(argv).epochs
    cfg = parse_args(argv + ["--keep-checkpoints", f"1,{epochs - 1}" if epochs > 2 else "1"])
    print(f"training {cfg.model} with {cfg.mix} for {cfg.epochs} epochs (crop {cfg.crop}) into {out}", flush=True)
    train(cfg)
    return out / "last.pt"


def trained_automix(model, loader, *, name: str, epochs: int, seed: int, num_classes: int) -> AutoMix:
    """AutoMix whose Mix Block has trained ``epochs`` epochs of ``loader`` (its schedules
    over those epochs) against a copy of ``model`` (a new ``name`` model: not the mid-level
    branch's hook) as its teacher, which keeps the model's weights up to float rounding
    (the model is not trained: the EMA moves a copy onto itself); returned not training, so scoring changes
    nothing."""
    mix = AutoMix.following(model, epochs=epochs, steps_per_epoch=len(loader), num_classes=num_classes,
                            teacher=build_model(name, num_classes=num_classes).to(next(model.parameters()).device))
    for e in range(epochs):
        loader.set_epoch(e)
        mix.set_epoch(e)
        rng = generator(seed, "mixer", epoch=e)
        for b in loader:
            mix.resolve(b.images, b.labels, mix.sample(b.images, b.labels, rng=rng))
            mix.after_step(model)
    return mix.eval()


def fill_cache(mix: SnapMix, model, loader, epoch: int) -> None:
    """Exact CAMs of every sample of ``loader``'s epoch ``epoch`` into the mixer's cache."""
    restore = snapshot(model)
    model.train()
    mix.cache.epoch.fill_(-1)
    mix.set_epoch(epoch)
    loader.set_epoch(epoch)
    for b in loader:
        mix.source.maps(b.images, b.labels.to(torch.int64), model, geometry=b.geometry)
        restore()


def plot(path: Path, rows: dict[str, dict], *, min_share: float) -> None:
    """Weight (as the loss applies it) against truth, one panel per row, the samples the
    main table scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    cols = 4
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(3.3 * cols, 3.4 * -(-len(names) // cols)),
                             squeeze=False, layout="constrained")
    hi = 2.0  # one scale for every panel, so that their spreads compare by eye; the few
    # applied same-label weights beyond it (SnapMix's doubled class weight) sit on its edge
    style = {"a": ("tab:blue", "w_a vs t_a"), "b": ("tab:orange", "w_b vs t_b"),
             "k": ("tab:purple", "one input of a group's output (Co-Mixup)"),
             "same": ("tab:green", f"same label: w_a + w_b vs t_a + t_b (clipped at {hi:g})")}
    for ax, name in zip(axes.ravel(), names):
        r = rows[name]
        keep = np.asarray(r["share"]) >= min_share
        w, t, kind = (np.asarray(r[k])[keep] for k in ("weight", "truth", "kind"))
        w, t = np.minimum(w, hi), np.minimum(t, hi)
        for k, (c, lab) in style.items():
            sel = kind == k
            ax.scatter(t[sel], w[sel], s=9 if k == "same" else 5, alpha=0.5, color=c, label=lab, linewidths=0)
        ax.plot([0, hi], [0, hi], color="black", linewidth=0.8)
        for d in (-LIE, LIE):
            ax.plot([0, hi], [d, hi + d], color="grey", linewidth=0.5, linestyle=":")
        ax.set_xlim(-0.05, hi + 0.05)
        ax.set_ylim(-0.05, hi + 0.05)
        h = r["at"][str(min_share)]
        ax.set_title(f"{name}\nMAE diff-label {h['mae_diff']:.3f}, all {h['mae']:.3f}, lies {h['lies']:.0%}", fontsize=9)
        ax.set_xlabel("truth (share of parts shown)", fontsize=8)
        ax.set_ylabel("label weight", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    axes[0, 0].legend(fontsize=7, markerscale=3, loc="upper left")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="", help="a train_dali.py checkpoint to score (its epoch1.pt beside it, "
                    "if kept, gives the early-CAM row); default: train one with the demo recipe")
    ap.add_argument("--train-mix", default="snapmix", help="the method the model is trained with (when training)")
    ap.add_argument("--epochs", type=int, default=0, help="training epochs (0: the demo preset's)")
    ap.add_argument("--passes", type=int, default=4, help="epochs of random crops of the test split to mix per row")
    ap.add_argument("--crops", default="160,224", help="larger crops at which exact SnapMix is also scored "
                    "(Lite0: 5x5, 7x7 maps)")
    ap.add_argument("--min-share", default="0.25,0.01", help="leave out samples whose crop holds less of their parts; "
                    "comma-separated: the first gives the main table and the last line, each other a column set")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the demo preset's)")
    ap.add_argument("--midlevel", action="store_true", help="train with the paper's mid-level branch (baseline+) and "
                    "also score SnapMix with the branch's CAMs (twice the resolution of the last stage's)")
    ap.add_argument("--device", default="cpu", choices=["auto", "gpu", "cpu"])
    ap.add_argument("--automix-epochs", type=int, default=2, help="epochs of the training split AutoMix's Mix Block "
                    "learns from before its row is scored (--quick: 1)")
    ap.add_argument("--out", default="runs/label_fidelity")
    ap.add_argument("--quick", action="store_true", help="tiny set, SmallCNN, 2 epochs, one pass: a smoke run for CI")
    a = ap.parse_args(argv)
    if a.automix_epochs < 1:
        raise SystemExit(f"--automix-epochs must be >= 1, got {a.automix_epochs}")
    if a.passes < 1:
        raise SystemExit(f"--passes must be >= 1, got {a.passes}")
    try:
        shares = [float(v) for v in a.min_share.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--min-share must be comma-separated numbers, got {a.min_share!r}") from None
    bad = [v for v in shares if not 0.0 < v <= 1.0]
    if not shares or bad:
        raise SystemExit(f"--min-share must be numbers in (0, 1], got {a.min_share!r}")
    try:
        crops = [int(c) for c in a.crops.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"--crops must be comma-separated sizes, got {a.crops!r}") from None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    if a.quick:
        ds = ensure_synthetic_birds(cache_dir=out / "cache", train_per_class=8, test_per_class=4, size=(60, 80))
        crops, passes, a.automix_epochs = [48], 1, 1
    else:
        ds = ensure_synthetic_birds(**BIRDS)
        passes = a.passes
    train_src, test_src = ImageSource.from_folder(ds.train_dir), ImageSource.from_folder(ds.test_dir)
    ckpt = Path(a.checkpoint) if a.checkpoint else train_model(a, ds.root, out / "train")
    model, cfg, branch = load_model(ckpt, train_src.num_classes)
    early_path = ckpt.parent / "epoch1.pt"
    early = load_model(early_path, train_src.num_classes)[0] if early_path.is_file() else None
    prev_path = ckpt.parent / f"epoch{cfg['epochs'] - 1}.pt"
    masks = PartMasks(test_src.paths, root=ds.root)
    mean, std = input_normalisation(cfg["model"])
    K = test_src.num_classes

    base_device = cfg["device"] if a.device == "auto" else a.device

    def loader_at(crop: int):
        spec = TransformSpec(resize=round(crop * cfg["resize"] / cfg["crop"]), crop=crop, mean=mean, std=std)
        return make_loader(cfg["data_loader"], test_src, batch_size=cfg["batch_size"], train=True, spec=spec,
                           device=base_device, seed=cfg["seed"] + 7, workers=2)

    c0 = cfg["crop"]
    epochs = tuple(range(passes))
    base = loader_at(c0)
    low = min(shares)  # measured once at the loosest threshold, summarised at each
    rows: dict[str, dict] = {}

    def scored(name: str, r: dict, *, crop: int, cam: str, seconds: float) -> None:
        r = {k: r[k] for k in ("mixed", "rows", "mixed_share")}  # the figures: per threshold, in "at"
        r.update(map=cam, crop=crop, seconds=seconds, at={str(v): {**summarise(r["rows"], min_share=v),
                                                                 "left_out": left_out(r, v)} for v in shares})
        rows[name] = r
        h = r["at"][str(shares[0])]
        print(f"{name}: MAE different-label {h['mae_diff']:.3f}, all {h['mae']:.3f}, lies {h['lies']:.1%} "
              f"({h['weights']} weights, {h['left_out']} of {r['mixed']} mixed samples without truth, {seconds:.0f} s)",
              flush=True)

    def run(name: str, mix, *, at=None, m=model, loader_epochs=epochs) -> None:
        t0 = time.perf_counter()
        r = measure(mix, model=m, loader=at or base, masks=masks, epochs=loader_epochs, seed=cfg["seed"],
                    min_share=low)
        cam = getattr(mix, "last_cam", None)
        scored(name, r, crop=(at or base).spec.crop, cam="x".join(str(s) for s in cam.shape[1:]) if cam is not None else "",
               seconds=time.perf_counter() - t0)

    run("truth (sanity)", TruthLabels(masks=masks, shuffle=False))
    run("shuffled truth", TruthLabels(masks=masks, shuffle=True))
    run("cutmix", CutMix(num_classes=K))
    run("as-cutmix", CutMix(asymmetric=True, num_classes=K))
    run("resizemix", ResizeMix(num_classes=K))  # area labels too: the whole partner, downscaled
    run("fmix", FMix(num_classes=K))  # the mask's mean: area labels on a free-form mask
    run("smoothmix", SmoothMix(num_classes=K))  # mask-mass labels on a soft mask
    run("samplepairing", SamplePairing(num_classes=K))  # (1, 0) on a half-half blend
    # area labels on a box around the source's saliency peak (the detector reads 8-bit levels)
    run("saliencymix", SaliencyMix(num_classes=K, mean=mean, std=std))
    run("guided-sr", GuidedMixup(num_classes=K, prob=1.0))  # mask-mass labels, saliency-ratio masks, greedy partners
    run("guided-ap", GuidedMixup(variant="ap", num_classes=K, prob=1.0))  # the same on the model's input gradients
    run("attentivemix", AttentiveMix(num_classes=K))  # area labels on the partner's top CAM cells (the trained model's)
    # mask-mean labels on saliency-kept blocks, the salient blocks moved (the truth follows them)
    run("puzzlemix", PuzzleMix(num_classes=K, mean=mean, std=std))
    # block-share labels of each output's inputs in a group (the batch: 16 < its 20), scored input by input
    run("comixup", CoMixup(num_classes=K))
    t0 = time.perf_counter()  # the Mix Block learns from the training split's batches, then mixes the test split's
    train_loader = make_loader(cfg["data_loader"], train_src, batch_size=cfg["batch_size"], train=True,
                               spec=base.spec, device=base_device, seed=cfg["seed"], workers=2)
    automix = trained_automix(model, train_loader, name=cfg["model"], epochs=a.automix_epochs, seed=cfg["seed"],
                              num_classes=K)
    print(f"automix: Mix Block trained {a.automix_epochs} epochs in {time.perf_counter() - t0:.0f} s", flush=True)
    run("automix", automix)  # lam labels on the learned masks (mask-mass truth)
    try:  # the paper's way: a fixed ImageNet network's attention (the Lite0 whose weights ship; extra 'accuracy')
        fixed = fixed_attention("efficientnet_lite0_imagenet", device=next(model.parameters()).device)
    except ValueError as e:
        print(f"no attentivemix-imagenet row: {e}")
    else:
        run("attentivemix-imagenet", AttentiveMix(num_classes=K, mean=mean, std=std, **fixed))
    for v in MIXED_EXAMPLE_VARIANTS:  # area labels on concatenations, cells, intervals and Bernoulli masks
        run(f"mixed-example: {v}", MixedExample(variant=v, num_classes=K))
    run("area-on-snapmix-boxes", AreaLabels(SnapMix(num_classes=K), name="area-on-snapmix-boxes"))
    run("snapmix", SnapMix(num_classes=K))
    for c in crops:
        run(f"snapmix @{c}", SnapMix(num_classes=K), at=loader_at(c))
    run("snapmix-lowres", SnapMix(num_classes=K, cam_resolution=0.5))
    improved = dict(num_classes=K, semantics="improved")
    run("area-on-improved-boxes", AreaLabels(SnapMix(**improved), name="area-on-improved-boxes"))
    run("snapmix-improved", SnapMix(**improved))
    for c in crops:
        run(f"snapmix-improved @{c}", SnapMix(**improved), at=loader_at(c))
    if branch is not None:  # the same params as the snapmix row, the branch's finer maps
        run("snapmix, mid-level CAMs", SnapMix(num_classes=K, cam_head=branch.cam_head()), m=branch)
        run("snapmix-improved, mid-level CAMs", SnapMix(cam_head=branch.cam_head(), **improved), m=branch)
    else:
        print("mid-level CAMs: not scored, the model has no mid-level branch (train with --midlevel)")
    later = tuple(e + passes + 1 for e in epochs)  # the cached row's batches: after each pass's refill
    if prev_path.is_file() and prev_path != ckpt:
        prev = load_model(prev_path, K)[0]
        cached = SnapMix(num_classes=K, cache=CAMCache(size=len(test_src), refresh_every=2))
        t0, parts = time.perf_counter(), []
        for e, e1 in zip(epochs, later):  # before each pass: maps of the previous pass's crops, by the previous model
            fill_cache(cached, prev, base, e + passes)
            parts.append(measure(cached, model=model, loader=base, masks=masks, epochs=(e1,), seed=cfg["seed"],
                                 min_share=low))
        r = {"mixed": sum(p["mixed"] for p in parts), "rows": [x for p in parts for x in p["rows"]], "mixed_share": np.concatenate([p["mixed_share"] for p in parts])}
        scored("snapmix-cached", r, crop=c0, cam="x".join(str(s) for s in cached.cache.cam.shape[1:]) + " cached",
               seconds=time.perf_counter() - t0)
        run("snapmix, cached row's batches", SnapMix(num_classes=K), loader_epochs=later)
    else:
        print(f"no checkpoint of epoch {cfg['epochs'] - 1} beside {ckpt}: no cached-mode row "
              f"(train with --keep-checkpoints {cfg['epochs'] - 1})")
    if early is not None:
        run("snapmix, epoch-1 CAMs", SnapMix(num_classes=K), m=early)
    else:
        print(f"no {early_path}: no epoch-1 row (train with --keep-checkpoints 1)")

    pairs = {"snapmix - area-on-snapmix-boxes": ("snapmix", "area-on-snapmix-boxes"),
             "snapmix-improved - area-on-improved-boxes": ("snapmix-improved", "area-on-improved-boxes"),
             "snapmix-lowres - snapmix": ("snapmix-lowres", "snapmix"),
             "snapmix, mid-level CAMs - snapmix": ("snapmix, mid-level CAMs", "snapmix"),
             "snapmix-improved, mid-level CAMs - snapmix-improved": ("snapmix-improved, mid-level CAMs",
                                                                     "snapmix-improved"),
             "snapmix-improved, mid-level CAMs - area-on-improved-boxes": ("snapmix-improved, mid-level CAMs",
                                                                           "area-on-improved-boxes"),
             "snapmix-cached - snapmix": ("snapmix-cached", "snapmix, cached row's batches")}
    paired_at = {str(v): {n: paired(rows[x]["rows"], rows[y]["rows"], min_share=v, seed=cfg["seed"])
                          for n, (x, y) in pairs.items() if x in rows and y in rows} for v in shares}

    head = (f"{cfg['model']} trained {cfg['epochs']} epochs with {cfg['mix']} (seed {cfg['seed']}, {ckpt}); test split, "
            f"{passes} passes of random crops; weights scored as the loss applies them; a lie is a weight off by more "
            f"than {LIE}; samples scored where both crops hold >= {shares[0]} of their parts; useless: the row's own "
            f"different-label weights against its truths in every order (a label that knows nothing of the image), "
            f"skill = MAE different-label / useless")
    extra = shares[1:]
    lines = [head, "| labels | crop | CAM | MAE different-label | MAE w_a | MAE w_b | MAE same-label (applied) | "
             "(claimed) | MAE all | lies | weights | left out | useless different-label | skill |"
             + "".join(f" MAE diff @{v} | MAE all @{v} | left out @{v} |" for v in extra),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|---|---|" * len(extra)]
    def f(v: float) -> str:
        return "-" if v != v else f"{v:.3f}"  # NaN: no weight of that kind (the improved rows have no self-pairs)

    for name, r in rows.items():
        h = r["at"][str(shares[0])]
        lines.append(f"| {name} | {r['crop']} | {r['map'] or '-'} | {h['mae_diff']:.3f} | {f(h['mae_a'])} | "
                     f"{f(h['mae_b'])} | {f(h['mae_same'])} | {f(h['mae_same_claim'])} | {h['mae']:.3f} | "
                     f"{h['lies']:.1%} | {h['weights']} | {h['left_out']}/{r['mixed']} | {f(h['useless_diff'])} | "
                     f"{f(h['skill_diff'])} |"
                     + "".join(f" {r['at'][str(v)]['mae_diff']:.3f} | {r['at'][str(v)]['mae']:.3f} | "
                               f"{r['at'][str(v)]['left_out']}/{r['mixed']} |" for v in extra))
    lines += ["", "paired, different-label weights of the same samples: mean |error| difference, 95 % bootstrap "
              "interval over samples, ratio of the mean errors",
              "| pair | min share | difference | 95 % interval | ratio | samples |", "|---|---|---|---|---|---|"]
    for v in shares:
        for n, d in paired_at[str(v)].items():
            lines.append(f"| {n} | {v} | {d['diff']:+.3f} | [{d['lo']:+.3f}, {d['hi']:+.3f}] | {d['ratio']:.2f}x | "
                         f"{d['samples']} |")
    print("\n".join(lines))
    report = {"checkpoint": str(ckpt), "config": cfg, "passes": passes, "min_share": shares, "lie": LIE,
              "paired": paired_at,
              "rows": {n: {**{k: v for k, v in r.items() if k not in ("rows", "mixed_share")},
                           **{k: np.concatenate([x[k] for x in r["rows"]]).tolist()
                              for k in ("weight", "claim", "truth", "kind", "share")}} for n, r in rows.items()},
              "wall_s": time.perf_counter() - t_all, "torch": torch.__version__}
    (out / "label_fidelity.json").write_text(json.dumps(report))
    plot(out / "label_fidelity.png", report["rows"], min_share=shares[0])
    print(f"wrote {out}/label_fidelity.json and label_fidelity.png ({report['wall_s']:.0f} s)")
    h = {n: rows[n]["at"][str(shares[0])]["mae_diff"] for n in ("snapmix", "cutmix", "as-cutmix", "area-on-snapmix-boxes")}
    print(f"label error snapmix {h['snapmix']:.3f} cutmix {h['cutmix']:.3f} as-cutmix {h['as-cutmix']:.3f} "
          f"area-on-snapmix-boxes {h['area-on-snapmix-boxes']:.3f}")
    return report


if __name__ == "__main__":
    main()
