"""Accuracy on real images: every mixing method, the same schedule, several seeds.

    python benchmarks/accuracy.py --protocol embedded    # the embedded set, where parts decide the class
    python benchmarks/accuracy.py                        # the two Fashion-MNIST protocols, 3 seeds
    python benchmarks/accuracy.py --protocol finetune --seeds 1
    python benchmarks/accuracy.py --quick                # embedded set, 1 seed, tiny (CI)
    python benchmarks/accuracy.py --protocol scarce      # 30 images per class, 3 seeds (~65 min here)

Data: Fashion-MNIST (Debian's ``dataset-fashion-mnist``: real photographs of clothing,
28x28 grey), written once as RGB JPEGs in the ImageFolder layout so the DALI loader is
the path measured; ``--per-class`` training images per class (fine-grained sets are
small), the test split subsampled to ``--test-per-class``.

Protocols (one schedule for every method):
  scratch   the paper's Table 4 setting: the built-in SmallCNN from scratch, switch
            probability 0.5 for every method
  finetune  the paper's main setting: EfficientNet-Lite0 with genuine ImageNet weights
            (extra ``accuracy``), the body at lr/10, the new classifier at lr; each
            method with its paper's switch probability
  embedded  the premise SnapMix is built on: the embedded birds set (classes told apart
            by two small parts), Lite0 fine-tuned with the demo's recipe (128 px crops,
            4x4 CAMs) for 12 epochs, past the baseline's plateau (about epoch 6)
  scarce    as many images per class as fine-grained sets have: the embedded set at 30
            training and 30 test images per class, the demo's recipe, 40 epochs (x0.1
            at 30 and 36); baseline, cutmix, snapmix, snapmix-improved; the paired
            per-seed differences (SnapMix - CutMix, SnapMix - baseline) are printed
Methods: baseline, cutout, mixup, cutmix, snapmix (exact), snapmix-lowres (CAM pass at
half size), snapmix-cached (CAMs cached, exact refresh every 5 epochs), snapmix-improved
(``semantics="improved"``: per-sample boxes, no self-pairs, eval-mode CAM pass); resizemix, ricap,
fmix, smoothmix, samplepairing, mixed-example (vh-mixup), saliencymix, manifold, guided-sr, guided-ap, attentivemix, puzzlemix, comixup (their papers' defaults; by ``--methods``); "<method>-warmup"
trains the first 2 epochs unmixed (``--mix-warmup 2``). The embedded protocol runs
baseline, cutmix, snapmix and snapmix-cached unless ``--methods`` says otherwise.

Per protocol it prints a table (top-1 = mean of the last 3 evaluated epochs of a run,
then mean +- std over seeds; best and last epoch; seconds per epoch), writes
``accuracy.png`` (test accuracy per epoch, mean over seeds, min-max shaded) and
``accuracy.json`` (every number, the machine and the versions) into ``--out``.
Runs go seed by seed, every method within a seed, so a cut-short run stays balanced.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from dali_snapmix.config import BIRDS, PRESETS, Config, for_method
from dali_snapmix.trainer import train

METHODS = {
    "baseline": {"mix": "baseline"},
    "cutout": {"mix": "cutout"},
    "mixup": {"mix": "mixup"},
    "cutmix": {"mix": "cutmix"},
    "snapmix": {"mix": "snapmix"},
    "snapmix-lowres": {"mix": "snapmix", "cam_resolution": 0.5},
    "snapmix-cached": {"mix": "snapmix", "cam_cache_every": 5},
    # per-sample boxes, no self-pairs, an eval-mode CAM pass (mix/snapmix.py)
    "snapmix-improved": {"mix": "snapmix", "snapmix_semantics": "improved"},
    # the rest of the family, each with its paper's defaults (--methods picks them)
    "resizemix": {"mix": "resizemix"},
    "ricap": {"mix": "ricap"},
    "fmix": {"mix": "fmix"},
    "smoothmix": {"mix": "smoothmix"},
    "samplepairing": {"mix": "samplepairing"},
    "mixed-example": {"mix": "mixed-example"},
    "saliencymix": {"mix": "saliencymix"},
    "manifold": {"mix": "manifold"},
    "guided-sr": {"mix": "guided-sr"},
    "guided-ap": {"mix": "guided-ap"},
    "attentivemix": {"mix": "attentivemix"},
    "puzzlemix": {"mix": "puzzlemix"},
    "comixup": {"mix": "comixup"},
    "automix": {"mix": "automix"},
}
METHODS.update({f"{m}-warmup": {**o, "mix_warmup": 2} for m, o in list(METHODS.items()) if m != "baseline"})

# Sizes chosen so that each protocol's default run (7 methods x 3 seeds) takes 35-40
# minutes on a 2-core CPU (measured: docs/results.md, "Results on real images").
PROTOCOLS = {
    "scratch": {
        "data": {"size": 40, "per_class": 80, "test_per_class": 200},
        "train": {"model": "small_cnn", "mix_prob": 0.5, "epochs": 20, "lr": 0.05, "lr_steps": "12,17",
                  "batch_size": 32, "resize": 40, "crop": 36},
    },
    "finetune": {
        "data": {"size": 72, "per_class": 40, "test_per_class": 100},
        "train": {"model": "efficientnet_lite0_imagenet", "epochs": 15, "lr": 0.02, "lr_pretrained": 0.002,
                  "lr_steps": "9,13", "batch_size": 16, "resize": 72, "crop": 64},
    },
    # the demo preset's recipe (train_dali.py), on a schedule past the baseline's plateau
    "embedded": {
        "data": {},
        "train": {**{k: v for k, v in PRESETS["demo"].items() if k != "out"}, "epochs": 12, "lr_steps": "9,11"},
        "methods": ["baseline", "cutmix", "snapmix", "snapmix-cached"],
    },
    # fine-grained sets' scarcity (CUB ~30 training images per class, FGVC-Aircraft 33,
    # Stanford Cars 41): the demo's recipe on 30 + 30 images per class; 40 epochs, about
    # the steps of the embedded protocol's 12 epochs on 100 per class
    "scarce": {
        "data": {"train_per_class": 30, "test_per_class": 30},
        "train": {**{k: v for k, v in PRESETS["demo"].items() if k != "out"}, "epochs": 40, "lr_steps": "30,36"},
        "methods": ["baseline", "cutmix", "snapmix", "snapmix-improved"],
    },
}
# the Fashion-MNIST protocols' default list (the variants are for --methods)
FASHION_METHODS = ["baseline", "cutout", "mixup", "cutmix", "snapmix", "snapmix-lowres", "snapmix-cached"]
# the paired per-seed differences each protocol reports, where both methods ran
PAIRS = [("snapmix", "cutmix"), ("snapmix", "baseline"), ("snapmix-improved", "cutmix"), ("snapmix-improved", "baseline")]
QUICK = {
    "scratch": {"epochs": 2, "lr_steps": "1", "batch_size": 16, "resize": 36, "crop": 32},
    "finetune": {"epochs": 2, "lr_steps": "1", "batch_size": 16, "resize": 72, "crop": 64},
    "embedded": {"epochs": 2, "lr_steps": "1", "batch_size": 16, "resize": 72, "crop": 64},
    "scarce": {"epochs": 2, "lr_steps": "1", "batch_size": 16, "resize": 72, "crop": 64},
}


def versions() -> dict:
    import numba
    import nvidia.dali as dali

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "?") if Path("/proc/cpuinfo").exists() else "?"
    return {"machine": platform.machine(), "processor": cpu, "cpus": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "dali": dali.__version__,
            "numba": numba.__version__}


def dataset(protocol: str, a) -> Path:
    from dali_snapmix.data import ensure_synthetic_birds

    if a.quick:  # the embedded set: always present, small
        return ensure_synthetic_birds(cache_dir=a.cache_dir, train_per_class=5, test_per_class=3, size=(60, 80)).root
    if protocol == "embedded":  # the trainer's own copy (dali_snapmix.config.BIRDS)
        return ensure_synthetic_birds(cache_dir=a.cache_dir, **BIRDS).root
    if protocol == "scarce":
        return ensure_synthetic_birds(cache_dir=a.cache_dir, **PROTOCOLS["scarce"]["data"]).root
    from dali_snapmix.data import ensure_fashion_mnist

    d = dict(PROTOCOLS[protocol]["data"])
    if a.per_class:
        d["per_class"] = a.per_class
    if a.crop:
        d["size"] = overrides(a)["resize"]
    try:
        return ensure_fashion_mnist(data_dir=a.data_dir, cache_dir=a.cache_dir, **d).root
    except ValueError as e:  # missing folder or bad files: the message says which and how to fix it
        raise SystemExit(f"accuracy benchmark: {e}") from None


def overrides(a) -> dict:
    o = {"epochs": a.epochs} if a.epochs else {}
    if a.crop:
        o.update(crop=a.crop, resize=a.crop * 9 // 8)
    return o


def run_one(protocol: str, method: str, seed: int, data: Path, a) -> dict:
    opts = {**PROTOCOLS[protocol]["train"], **(QUICK[protocol] if a.quick else {}), **METHODS[method], **overrides(a)}
    out = Path(a.out) / protocol / method / f"seed{seed}"
    # the protocol's shared recipe, less the options this method does not take (baseline: mix_prob)
    cfg = Config(data=str(data), device=a.device, seed=seed, out=str(out), workers=2, **opts)
    cfg = for_method(cfg, cfg.mix)
    if out.exists():  # a finished run is reused only if it was made with the same settings
        old = out / "result.json"
        conf = out / "config.json"
        if old.exists() and conf.exists() and json.loads(conf.read_text()) == dataclasses.asdict(cfg):
            return {"result": json.loads(old.read_text()), "history": _history(out), "reused": True}
        import shutil

        shutil.rmtree(out)
    log = out.parent / f"seed{seed}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f, contextlib.redirect_stdout(f):
        result = train(cfg)
    return {"result": result, "history": _history(out), "reused": False}


def _history(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    rows = {}
    for method, rs in runs.items():
        top = [statistics.mean([h["top1"] for h in r["history"] if h["top1"] is not None][-3:]) for r in rs]
        rows[method] = {
            "top1_mean": statistics.mean(top), "top1_std": statistics.stdev(top) if len(top) > 1 else 0.0,
            "best": statistics.mean(r["result"]["best_top1"] for r in rs),
            "last": statistics.mean(r["result"]["top1"] for r in rs),
            "s_per_epoch": statistics.median(r["result"]["seconds_per_epoch"] for r in rs),
            "seeds": len(rs), "top1_per_seed": top,
        }
    return rows


def paired(rows: dict[str, dict]) -> dict[str, dict]:
    """Per-seed differences of the test score (same seed: same data order, crops and
    initial weights), for each pair in PAIRS that ran: mean +- std over seeds."""
    out = {}
    for m, ref in PAIRS:
        if m in rows and ref in rows:
            d = [x - y for x, y in zip(rows[m]["top1_per_seed"], rows[ref]["top1_per_seed"])]
            out[f"{m} - {ref}"] = {"per_seed": d, "mean": statistics.mean(d),
                                   "std": statistics.stdev(d) if len(d) > 1 else 0.0}
    return out


def table(protocol: str, rows: dict[str, dict], settings: dict) -> str:
    base = rows.get("baseline", {}).get("top1_mean")
    snap = rows.get("snapmix", {}).get("top1_mean")
    lines = [f"{protocol}: {settings}",
             "| method | top-1 (mean +- std) | vs baseline | vs snapmix | best | last epoch | s / epoch |",
             "|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        vb = f"{(r['top1_mean'] - base) * 100:+.1f}" if base is not None else "n/a"
        vs = f"{(r['top1_mean'] - snap) * 100:+.1f}" if snap is not None and m.startswith("snapmix-") else ""
        lines.append(f"| {m} | {r['top1_mean'] * 100:.1f} +- {r['top1_std'] * 100:.1f} | {vb} | {vs} | "
                     f"{r['best'] * 100:.1f} | {r['last'] * 100:.1f} | {r['s_per_epoch']:.1f} |")
    return "\n".join(lines)


def plot(path: Path, all_runs: dict[str, dict[str, list[dict]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(all_runs), figsize=(6 * len(all_runs), 4), squeeze=False)
    for ax, (protocol, runs) in zip(axes[0], all_runs.items()):
        for i, (method, rs) in enumerate(runs.items()):
            acc = np.array([[h["top1"] for h in r["history"]] for r in rs], dtype=float) * 100
            ep = np.arange(1, acc.shape[1] + 1)
            colour = plt.cm.tab10(i)
            ax.plot(ep, acc.mean(0), label=method, color=colour, linestyle="--" if method.startswith("snapmix-") else "-")
            ax.fill_between(ep, acc.min(0), acc.max(0), color=colour, alpha=0.15)
        k = len(next(iter(runs.values())))
        ax.set_title(f"{protocol} ({k} seed{'s' if k != 1 else ''}; shaded: min-max)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="both", choices=["both", *PROTOCOLS],
                    help="both: scratch and finetune (Fashion-MNIST); embedded runs on its own")
    ap.add_argument("--methods", default="", help="comma-separated subset of " + ",".join(METHODS)
                    + " (default: the protocol's list, else all but the -warmup variants)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=0, help="override the protocol's epochs (0: keep)")
    ap.add_argument("--per-class", type=int, default=0, help="training images per class (0: the protocol's)")
    ap.add_argument("--crop", type=int, default=0, help="crop side; images are written and resized at 9/8 of it "
                    "(0: the protocol's)")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST idx files")
    ap.add_argument("--cache-dir", default=None, help="where the JPEG copies go (default: the package cache)")
    ap.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
    ap.add_argument("--out", default="runs/accuracy")
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, the embedded set: a smoke run for CI")
    a = ap.parse_args(argv)
    chosen = [m for m in a.methods.split(",") if m]
    bad = [m for m in chosen if m not in METHODS]
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; choose from {list(METHODS)}")
    if a.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {a.seeds}")
    seeds = 1 if a.quick else a.seeds
    protocols = ["scratch", "finetune"] if a.protocol == "both" else [a.protocol]
    Path(a.out).mkdir(parents=True, exist_ok=True)

    report = {"versions": versions(), "quick": a.quick, "protocols": {}}
    all_runs: dict[str, dict[str, list[dict]]] = {}
    t_all = time.perf_counter()
    for protocol in protocols:
        data = dataset(protocol, a)
        settings = {**PROTOCOLS[protocol]["train"], **(QUICK[protocol] if a.quick else {}), **overrides(a), "data": str(data)}
        methods = chosen or PROTOCOLS[protocol].get("methods") or FASHION_METHODS
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        t0 = time.perf_counter()
        for seed in range(seeds):
            for m in methods:
                r = run_one(protocol, m, seed, data, a)
                runs[m].append(r)
                last = r["history"][-1]["top1"]
                print(f"{protocol} {m} seed {seed}: last top-1 {last:.4f} best {r['result']['best_top1']:.4f} "
                      f"({r['result']['seconds_per_epoch']:.1f} s/epoch{', reused' if r['reused'] else ''})", flush=True)
        rows = summarise(runs)
        pairs = paired(rows)
        print(table(protocol, rows, settings), flush=True)
        for name, p in pairs.items():
            print(f"{protocol} paired, {name}: {p['mean'] * 100:+.1f} +- {p['std'] * 100:.1f} points "
                  f"(per seed {' '.join(f'{x * 100:+.1f}' for x in p['per_seed'])})", flush=True)
        print(f"{protocol}: {time.perf_counter() - t0:.0f} s", flush=True)
        all_runs[protocol] = runs
        report["protocols"][protocol] = {"settings": settings, "summary": rows, "paired": pairs,
                                         "wall_s": time.perf_counter() - t0,
                                         "runs": {m: [{"seed": s, **r} for s, r in enumerate(rs)] for m, rs in runs.items()}}
    plot(Path(a.out) / "accuracy.png", all_runs)
    (Path(a.out) / "accuracy.json").write_text(json.dumps(report, indent=1))
    v = report["versions"]
    print(f"machine {v['machine']} {v['processor']}, {v['cpus']} threads; torch {v['torch']}, DALI {v['dali']}, "
          f"numba {v['numba']}; total {time.perf_counter() - t_all:.0f} s; wrote {a.out}/accuracy.png and accuracy.json")
    return report


if __name__ == "__main__":
    main()
