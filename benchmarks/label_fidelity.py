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

Rows: CutMix and asymmetric CutMix (area labels); SnapMix exact at the training crop
and at larger crops of the same model (finer CAMs), its low-resolution mode, its cached
mode (maps one epoch old: the previous epoch's crops, the previous epoch's model), and
SnapMix with the CAMs of the model after its first epoch; a sanity row (weights = the
truth: zero error, up to the float32 rounding of the label contract's weights) and a shuffled-truth row (the truth of another sample of the batch:
the error of a useless label). Prints a table and a last line
``label error snapmix X cutmix Y as-cutmix Z`` (mean absolute error over all weights);
writes label_fidelity.json (every number, every weight) and label_fidelity.png (weight
against truth, one panel per row) into --out.
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
from dali_snapmix.fidelity import LIE, PartMasks, measure, part_truth, snapshot, summarise
from dali_snapmix.mix import BoxParams, CAMCache, CutMix, MixedBatch, MixMethod, SnapMix
from dali_snapmix.mix.params import paste_boxes
from dali_snapmix.mix.snapmix import merge_same_label
from dali_snapmix.models import build_model, input_normalisation
from dali_snapmix.trainer import train


@dataclass(frozen=True)
class ShuffledBoxParams(BoxParams):
    """SnapMix's boxes, and the permutation that hands each sample another's truth."""

    shuffle: torch.Tensor | None = None


class TruthLabels(MixMethod):
    """SnapMix's boxes and pairing, labelled with the truth itself (sanity: zero error),
    or with the truth of another sample of the batch (``shuffle``: a useless label)."""

    merges_same_label = True
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
        w_a, w_b = merge_same_label(t_a, t_b, t.same)
        return MixedBatch(images, y, y[params.perm], w_a.float(), w_b.float())


def load_model(path: Path, num_classes: int) -> tuple[torch.nn.Module, dict]:
    if not path.is_file():
        raise SystemExit(f"--checkpoint: no such file {path}")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ck.get("config") if isinstance(ck, dict) else None
    if cfg is None or "model" not in ck:
        raise SystemExit(f"--checkpoint {path}: not a checkpoint written by train_dali.py")
    if cfg.get("midlevel"):
        raise SystemExit(f"--checkpoint {path}: a --midlevel model; score its backbone from a run without the branch")
    model = build_model(cfg["model"], num_classes=num_classes)
    model.load_state_dict(ck["model"])
    return model, cfg


def train_model(a, data_root: Path, out: Path) -> Path:
    """The demo recipe (or a tiny one with --quick), keeping the checkpoints of epoch 1 (the
    early-CAM row) and of the epoch before the last (the cached row's one-epoch-old maps)."""
    if a.quick:
        argv = ["--data", str(data_root), "--model", "small_cnn", "--resize", "40", "--crop", "32", "--epochs", "2",
                "--batch-size", "8", "--lr", "0.05", "--lr-steps", "1"]
    else:
        argv = ["--preset", "demo"] + (["--epochs", str(a.epochs)] if a.epochs else [])
    argv += ["--mix", a.train_mix, "--out", str(out), "--device", a.device]
    epochs = parse_args(argv).epochs
    cfg = parse_args(argv + ["--keep-checkpoints", f"1,{epochs - 1}" if epochs > 2 else "1"])
    print(f"training {cfg.model} with {cfg.mix} for {cfg.epochs} epochs (crop {cfg.crop}) into {out}", flush=True)
    train(cfg)
    return out / "last.pt"


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


def plot(path: Path, rows: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    cols = 4
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(3.3 * cols, 3.4 * -(-len(names) // cols)),
                             squeeze=False, layout="constrained")
    style = {"a": ("tab:blue", "w_a vs t_a"), "b": ("tab:orange", "w_b vs t_b"),
             "same": ("tab:green", "same label: class weight vs t_a + t_b")}
    # one scale for every panel, so that their spreads compare by eye
    hi = max([1.0] + [float(np.nanmax(np.r_[r["weight"], r["truth"]])) for r in rows.values() if len(r["weight"])])
    for ax, name in zip(axes.ravel(), names):
        r = rows[name]
        w, t, kind = np.asarray(r["weight"]), np.asarray(r["truth"]), np.asarray(r["kind"])
        for k, (c, lab) in style.items():
            sel = kind == k
            ax.scatter(t[sel], w[sel], s=5, alpha=0.4, color=c, label=lab, linewidths=0)
        ax.plot([0, hi], [0, hi], color="black", linewidth=0.8)
        for d in (-LIE, LIE):
            ax.plot([0, hi], [d, hi + d], color="grey", linewidth=0.5, linestyle=":")
        ax.set_xlim(-0.05, hi + 0.05)
        ax.set_ylim(-0.05, hi + 0.05)
        ax.set_title(f"{name}\nMAE {r['mae']:.3f}, lies {r['lies']:.0%}", fontsize=9)
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
    ap.add_argument("--min-share", type=float, default=0.25, help="leave out samples whose crop holds less of their parts")
    ap.add_argument("--device", default="cpu", choices=["auto", "gpu", "cpu"])
    ap.add_argument("--out", default="runs/label_fidelity")
    ap.add_argument("--quick", action="store_true", help="tiny set, SmallCNN, 2 epochs, one pass: a smoke run for CI")
    a = ap.parse_args(argv)
    if a.passes < 1:
        raise SystemExit(f"--passes must be >= 1, got {a.passes}")
    if not 0.0 < a.min_share <= 1.0:
        raise SystemExit(f"--min-share must be in (0, 1], got {a.min_share}")
    try:
        crops = [int(c) for c in a.crops.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"--crops must be comma-separated sizes, got {a.crops!r}") from None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    if a.quick:
        ds = ensure_synthetic_birds(cache_dir=out / "cache", train_per_class=8, test_per_class=4, size=(60, 80))
        crops, passes = [48], 1
    else:
        ds = ensure_synthetic_birds(**BIRDS)
        passes = a.passes
    train_src, test_src = ImageSource.from_folder(ds.train_dir), ImageSource.from_folder(ds.test_dir)
    ckpt = Path(a.checkpoint) if a.checkpoint else train_model(a, ds.root, out / "train")
    model, cfg = load_model(ckpt, train_src.num_classes)
    early_path = ckpt.parent / "epoch1.pt"
    early = load_model(early_path, train_src.num_classes)[0] if early_path.is_file() else None
    prev_path = ckpt.parent / f"epoch{cfg['epochs'] - 1}.pt"
    masks = PartMasks(test_src.paths, root=ds.root)
    mean, std = input_normalisation(cfg["model"])
    K = test_src.num_classes

    def loader_at(crop: int):
        spec = TransformSpec(resize=round(crop * cfg["resize"] / cfg["crop"]), crop=crop, mean=mean, std=std)
        return make_loader(cfg["data_loader"], test_src, batch_size=cfg["batch_size"], train=True, spec=spec,
                           device=cfg["device"] if a.device == "auto" else a.device, seed=cfg["seed"] + 7, workers=2)

    c0 = cfg["crop"]
    epochs = tuple(range(passes))
    base = loader_at(c0)
    rows: dict[str, dict] = {}

    def run(name: str, mix, *, at=None, m=model) -> None:
        t0 = time.perf_counter()
        r = measure(mix, model=m, loader=at or base, masks=masks, epochs=epochs, seed=cfg["seed"], min_share=a.min_share)
        cam = getattr(mix, "last_cam", None)
        r["map"] = "x".join(str(s) for s in cam.shape[1:]) if cam is not None else ""
        r["crop"] = (at or base).spec.crop
        r["seconds"] = time.perf_counter() - t0
        rows[name] = r
        print(f"{name}: MAE {r['mae']:.3f} lies {r['lies']:.1%} ({r['weights']} weights, {r['excluded']} of "
              f"{r['mixed']} mixed samples without truth, {r['seconds']:.0f} s)", flush=True)

    run("truth (sanity)", TruthLabels(masks=masks, shuffle=False))
    run("shuffled truth", TruthLabels(masks=masks, shuffle=True))
    run("cutmix", CutMix(num_classes=K))
    run("as-cutmix", CutMix(asymmetric=True, num_classes=K))
    run("snapmix", SnapMix(num_classes=K))
    for c in crops:
        run(f"snapmix @{c}", SnapMix(num_classes=K), at=loader_at(c))
    run("snapmix-lowres", SnapMix(num_classes=K, cam_resolution=0.5))
    if prev_path.is_file() and prev_path != ckpt:
        prev = load_model(prev_path, K)[0]
        cached = SnapMix(num_classes=K, cache=CAMCache(size=len(test_src), refresh_every=2))
        t0, parts = time.perf_counter(), []
        for e in epochs:  # before each pass: maps of the previous pass's crops, by the previous epoch's model
            fill_cache(cached, prev, base, e + passes)
            parts.append(measure(cached, model=model, loader=base, masks=masks, epochs=(e + passes + 1,),
                                 seed=cfg["seed"], min_share=a.min_share))
        r = {**summarise([x for p in parts for x in p["rows"]]), "mixed": sum(p["mixed"] for p in parts),
             "excluded": sum(p["excluded"] for p in parts), "rows": [x for p in parts for x in p["rows"]],
             "map": "x".join(str(s) for s in cached.cache.cam.shape[1:]) + " cached", "crop": c0,
             "seconds": time.perf_counter() - t0}
        rows["snapmix-cached"] = r
        print(f"snapmix-cached: MAE {r['mae']:.3f} lies {r['lies']:.1%}", flush=True)
    else:
        print(f"no checkpoint of epoch {cfg['epochs'] - 1} beside {ckpt}: no cached-mode row "
              f"(train with --keep-checkpoints {cfg['epochs'] - 1})")
    if early is not None:
        run("snapmix, epoch-1 CAMs", SnapMix(num_classes=K), m=early)
    else:
        print(f"no {early_path}: no epoch-1 row (train with --keep-checkpoints 1)")

    head = (f"{cfg['model']} trained {cfg['epochs']} epochs with {cfg['mix']} ({ckpt}); test split, {passes} passes "
            f"of random crops; a lie is a weight off by more than {LIE}")
    lines = [head, "| labels | crop | CAM | MAE w_a | MAE w_b | MAE same-label | MAE all | lies | weights | left out |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['crop']} | {r['map'] or '-'} | {r['mae_a']:.3f} | {r['mae_b']:.3f} | "
                     f"{r['mae_same']:.3f} | {r['mae']:.3f} | {r['lies']:.1%} | {r['weights']} | "
                     f"{r['excluded']}/{r['mixed']} |")
    print("\n".join(lines))
    report = {"checkpoint": str(ckpt), "config": cfg, "passes": passes, "min_share": a.min_share, "lie": LIE,
              "rows": {n: {**{k: v for k, v in r.items() if k != "rows"},
                           "weight": np.concatenate([x["weight"] for x in r["rows"]]).tolist(),
                           "truth": np.concatenate([x["truth"] for x in r["rows"]]).tolist(),
                           "kind": np.concatenate([x["kind"] for x in r["rows"]]).tolist()} for n, r in rows.items()},
              "wall_s": time.perf_counter() - t_all, "torch": torch.__version__}
    (out / "label_fidelity.json").write_text(json.dumps(report))
    plot(out / "label_fidelity.png", report["rows"])
    print(f"wrote {out}/label_fidelity.json and label_fidelity.png ({report['wall_s']:.0f} s)")
    print(f"label error snapmix {rows['snapmix']['mae']:.3f} cutmix {rows['cutmix']['mae']:.3f} "
          f"as-cutmix {rows['as-cutmix']['mae']:.3f}")
    return report


if __name__ == "__main__":
    main()
