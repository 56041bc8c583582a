"""Images/s of the DALI loader against the torchvision DataLoader, same files, same transforms.

    python benchmarks/loader.py                # embedded birds set, 512 -> 448 crops, 2 threads/workers

Both sides get the same number of worker threads. "torchvision" is the DataLoader
most people run (ImageFolder, Resize, RandomCrop, RandomHorizontalFlip, ToTensor,
Normalize, persistent workers); "fallback" is our PyTorch loader driven by the same
epoch plan as DALI; "dali-ops" is the DALI loader with DALI's own resize and
crop_mirror_normalize on the CPU (the GPU graph's ops) instead of the fused Numba
pass. Each round times every loader once, in a fresh random order
(dali_snapmix/timing.py), over a fixed number of batches after a warm-up of its own;
round 0 warms everything up and is discarded; medians are reported and the
DALI/torchvision ratio is last.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time
from itertools import islice

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="ImageFolder root (default: the embedded train split)")
    p.add_argument("--resize", type=int, default=512)
    p.add_argument("--crop", type=int, default=448)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=20, help="batches timed per round")
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()

    import nvidia.dali
    import torchvision
    import torchvision.transforms as T

    from dali_snapmix.data import DALILoader, ImageSource, TorchLoader, TransformSpec, ensure_synthetic_birds
    from dali_snapmix.timing import medians, shuffled_rounds

    root = a.data or str(ensure_synthetic_birds().train_dir)
    src = ImageSource.from_folder(root)
    spec = TransformSpec(resize=a.resize, crop=a.crop)
    tv_ds = torchvision.datasets.ImageFolder(
        root,
        T.Compose([T.Resize(a.resize), T.RandomCrop(a.crop), T.RandomHorizontalFlip(), T.ToTensor(),
                   T.Normalize(spec.mean, spec.std)]),
    )
    tv = torch.utils.data.DataLoader(tv_ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers,
                                     drop_last=True, persistent_workers=True)
    loaders = {
        "dali": DALILoader(src, batch_size=a.batch_size, train=True, spec=spec, device="cpu", num_threads=a.workers),
        "dali-ops": DALILoader(src, batch_size=a.batch_size, train=True, spec=spec, device="cpu",
                               num_threads=a.workers, cpu_resize="dali"),
        "torchvision": tv,
        "fallback": TorchLoader(src, batch_size=a.batch_size, train=True, spec=spec, device="cpu", num_workers=a.workers),
    }
    need = a.batches + 3
    if len(loaders["dali"]) < need:
        raise SystemExit(f"{root} has too few images for {need} batches of {a.batch_size}; lower --batches")

    def one_round(name):
        it = iter(loaders[name])
        for _ in islice(it, 3):  # warm-up: workers started, pipeline primed
            pass
        t = time.perf_counter()
        n = sum(len(b[0]) if isinstance(b, list) else len(b) for b in islice(it, a.batches))
        dt = time.perf_counter() - t
        for _ in it:  # finish the epoch so the next round starts a fresh one
            pass
        return n / dt

    # each round's figure is its images/s, measured inside one_round (the epoch's tail is not timed)
    rates = shuffled_rounds({k: functools.partial(one_round, k) for k in loaders}, rounds=a.rounds, warmup=1,
                            measure=lambda f: f())
    med = medians(rates)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"DALI {nvidia.dali.__version__}")
    print(f"data: {root} ({len(src)} images), resize {a.resize} -> crop {a.crop}, batch {a.batch_size}, "
          f"{a.workers} threads/workers, {a.rounds} shuffled rounds of {a.batches} batches")
    print("| loader | median images/s | all rounds |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {' '.join(f'{x:.0f}' for x in rates[k])} |")
    print(f"dali/dali-ops {med['dali'] / med['dali-ops']:.2f}x  dali/fallback {med['dali'] / med['fallback']:.2f}x  "
          f"dali/torchvision {med['dali'] / med['torchvision']:.2f}x")


if __name__ == "__main__":
    main()
