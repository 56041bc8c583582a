"""Train a classifier on DALI batches (issue 2 scope: the baseline, no mixing yet).

    python train_dali.py                      # the embedded birds set, short CPU-sized schedule
    python train_dali.py --data DIR --resize 512 --crop 448 --epochs 200

With no --data the embedded synthetic fine-grained set is generated (once) and used
with a small schedule that fits a 2-core CPU; the GPU is used when CUDA is available.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dali_snapmix.data import ImageSource, TransformSpec, ensure_synthetic_birds, make_loader, resolve_device
from dali_snapmix.models import build_model


@dataclass
class Config:
    data: str = ""  # ImageFolder root with train/ and test/; empty: the embedded birds set
    data_loader: str = "dali"  # dali | pytorch (the plain torchvision fallback)
    device: str = "auto"  # auto | gpu | cpu
    model: str = "small_cnn"  # small_cnn | resnet18/34/50/101 | densenet121
    epochs: int = 6  # training epochs
    batch_size: int = 32  # images per step
    lr: float = 0.05  # SGD learning rate
    momentum: float = 0.9  # SGD (Nesterov) momentum
    weight_decay: float = 1e-4  # L2 penalty
    resize: int = 112  # shorter side after resize
    crop: int = 96  # square crop side
    workers: int = 2  # DALI threads / DataLoader workers
    seed: int = 0  # everything random derives from this
    out: str = "runs/demo"  # where logs and the resolved config go


def parse_args(argv=None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    return Config(**vars(p.parse_args(argv)))


def evaluate(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for b in loader:
            correct += (model(b.images).argmax(1) == b.labels).sum().item()
            total += len(b)
    return correct / max(total, 1)


def main(argv=None) -> dict:
    cfg = parse_args(argv)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if cfg.data:
        train_src = ImageSource.from_folder(Path(cfg.data) / "train")
        test_src = ImageSource.from_folder(Path(cfg.data) / "test")
    else:
        ds = ensure_synthetic_birds()
        train_src, test_src = ImageSource.from_folder(ds.train_dir), ImageSource.from_folder(ds.test_dir)
    spec = TransformSpec(resize=cfg.resize, crop=cfg.crop)
    common = dict(spec=spec, device=device, seed=cfg.seed, workers=cfg.workers)
    train_loader = make_loader(cfg.data_loader, train_src, batch_size=cfg.batch_size, train=True, **common)
    test_loader = make_loader(cfg.data_loader, test_src, batch_size=cfg.batch_size, train=False, **common)

    tdev = torch.device("cuda" if device == "gpu" else "cpu")
    model = build_model(cfg.model, num_classes=train_src.num_classes).to(tdev)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * len(train_loader))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    print(f"device={device} loader={cfg.data_loader} model={cfg.model} train={len(train_src)} test={len(test_src)} "
          f"classes={train_src.num_classes} steps/epoch={len(train_loader)}")
    best = 0.0
    for epoch in range(cfg.epochs):
        model.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        for b in train_loader:
            loss = F.cross_entropy(model(b.images), b.labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, after {seen} images")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(b)
            loss_sum += loss.item() * len(b)
        dt = time.perf_counter() - t0
        acc = evaluate(model, test_loader)
        best = max(best, acc)
        row = dict(epoch=epoch, loss=loss_sum / seen, top1=acc, seconds=dt, images_per_s=seen / dt)
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"epoch {epoch}: loss {row['loss']:.3f} top1 {acc:.3f} {row['images_per_s']:.0f} img/s")
    result = dict(top1=acc, best_top1=best, images_per_s=row["images_per_s"])
    print(f"RESULT top1={acc:.4f} best_top1={best:.4f} images/s={row['images_per_s']:.1f}")
    return result


if __name__ == "__main__":
    main()
