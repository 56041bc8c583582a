"""Train a fine-grained classifier on DALI batches with SnapMix (or another mixing method).

    python train_dali.py --data DIR                      # the paper's recipe: ResNet-50, 448 crops, 200 epochs
    python train_dali.py --data DIR --pretrained r50.pth --midlevel
    python train_dali.py --preset scratch --mix cutmix    # the paper's from-scratch setting
    python train_dali.py --preset demo --compare baseline,cutmix,snapmix   # what `make demo` runs
    torchrun --nproc_per_node 4 train_dali.py --data DIR  # one process per GPU (gloo on CPUs)

Each step: a batch from the DALI loader (or the PyTorch fallback) -> mixing on the
batch's device, SnapMix taking its CAMs from the current model -> forward -> mixed loss
-> backward -> step. Settings: dataclass defaults < --preset < --config YAML < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from dali_snapmix.data import ImageSource, TransformSpec, ensure_synthetic_birds, make_loader, resolve_device
from dali_snapmix.mix import METHODS, CAMCache, build_mix, mixed_cross_entropy
from dali_snapmix.models import (
    SHIPS_WEIGHTS,
    MidLevel,
    build_model,
    classifier_of,
    init_new_head,
    input_normalisation,
    load_pretrained,
    mid_layer,
)
from dali_snapmix.seeding import generator, torch_seed


@dataclass
class Config:
    config: str = ""  # YAML file whose keys set defaults (flags still win)
    preset: str = "paper"  # paper | scratch (Table 4 setting) | demo (CPU-sized, embedded data)
    data: str = ""  # ImageFolder root with train/ and test/; empty: the embedded birds set
    data_loader: str = "dali"  # dali | pytorch (the plain torchvision fallback, same plan)
    device: str = "auto"  # auto | gpu | cpu
    model: str = "resnet50"  # small_cnn | resnet18/34/50/101 | densenet121 | inception_v3 | timm:<name>
    pretrained: str = ""  # local state dict for the backbone (nothing is ever downloaded)
    midlevel: bool = False  # add the paper's baseline+ mid-level branch (ResNet, small_cnn)
    mix: str = "snapmix"  # baseline | mixup | cutmix | as-cutmix | cutout | snapmix
    # method options (None: the method's paper default); one that the method does not take is an error
    mix_prob: float | None = None  # switch probability, in [0, 1] (not baseline)
    mix_beta: float | None = None  # Beta(beta, beta) ratio parameter, > 0 (mixup, cutmix, as-cutmix, snapmix)
    snapmix_semantics: str | None = None  # released (default) | improved (see dali_snapmix/mix/snapmix.py)
    cam_resolution: float | None = None  # SnapMix CAM pass on a copy downscaled by this factor, in (0, 1] (0.5: low-res mode)
    cam_cache_every: int | None = None  # SnapMix cached-CAM mode: exact CAMs refreshed every N epochs (0: off)
    epochs: int = 200  # training epochs
    batch_size: int = 16  # images per step (per process)
    lr: float = 0.01  # learning rate of new layers (all layers without --pretrained)
    lr_pretrained: float = 0.001  # learning rate of pretrained layers (--pretrained, efficientnet_lite0_imagenet)
    lr_steps: str = "80,150,180"  # epochs at which the learning rate is multiplied by lr_gamma
    lr_gamma: float = 0.1  # step factor
    momentum: float = 0.9  # SGD Nesterov momentum
    weight_decay: float = 1e-4  # L2 penalty
    resize: int = 512  # resize target (shorter side, or both sides with resize_mode=warp)
    resize_mode: str = "shorter"  # shorter | warp (Cars, Aircraft)
    crop: int = 448  # square crop side
    amp: str = "off"  # off | bf16 (autocast on GPU or CPU) | fp16 (GPU only, with a gradient scaler)
    channels_last: bool = False  # channels_last model and (mixed) batches, on any device (CPU: Lite0 steps 1.27x faster)
    eval_every: int = 1  # evaluate every N epochs (and after the last)
    workers: int = 2  # DALI threads / DataLoader workers
    seed: int = 0  # every random stream derives from it (dali_snapmix/seeding.py: purpose, epoch, rank)
    out: str = "runs/train"  # logs, checkpoints, plots and the resolved config go here
    resume: str = ""  # checkpoint to continue from (written by this script)
    save_samples: bool = False  # after training, write samples.png: one batch mixed with the trained model
    compare: str = ""  # comma-separated methods: train each in turn, print one table
    mix_warmup: int = 0  # the first N epochs train unmixed, whatever the method (early CAMs come from an untrained head)
    keep_checkpoints: str = ""  # comma-separated epochs whose checkpoint is also kept, as epoch<K>.pt
    label_fidelity: bool = False  # after training, score the method's labels against the embedded set's part masks
    record_indices: bool = False  # write the sample indices each rank saw (for tests)


# the embedded set the trainer uses without --data: 100 training images per class took the
# demo's baseline from 0.89 (60 per class) to 0.92 top-1 in 8 epochs (README, make demo)
BIRDS = {"train_per_class": 100, "test_per_class": 30}

# a preset's method option applies to the methods that take it (scratch: mix_prob 0.5 for
# every method with a switch, the paper's Table 4; baseline has none)
PRESETS = {
    "paper": {},
    "scratch": {"mix_prob": 0.5, "epochs": 300, "lr": 0.01, "lr_steps": "150,225,270"},
    # fine-tunes the ImageNet Lite0 at 128 px crops (4x4 CAMs) on the embedded set (README: make demo)
    "demo": {"model": "efficientnet_lite0_imagenet", "epochs": 8, "batch_size": 16, "lr": 0.04, "lr_pretrained": 0.008,
             "lr_steps": "6,7", "resize": 146, "crop": 128, "channels_last": True, "out": "runs/demo"},
}
CHOICES = {
    "preset": list(PRESETS), "data_loader": ["dali", "pytorch"], "device": ["auto", "gpu", "cpu"],
    "mix": list(METHODS), "snapmix_semantics": ["released", "improved"], "resize_mode": ["shorter", "warp"],
    "amp": ["off", "bf16", "fp16"],
}
# the methods each method option applies to
APPLIES = {
    "mix_prob": [m for m in METHODS if m != "baseline"],
    "mix_beta": ["mixup", "cutmix", "as-cutmix", "snapmix"],
    "snapmix_semantics": ["snapmix"],
    "cam_resolution": ["snapmix"],
    "cam_cache_every": ["snapmix"],
}
TYPES = {"int": int, "float": float, "str": str}
FP16_ON_CPU = "--amp fp16 needs a GPU (fp16 training needs CUDA's gradient scaler); on the CPU use --amp bf16"
NOT_IN_RESUME_CHECK = {"config", "resume", "out", "workers", "save_samples", "record_indices", "compare", "eval_every", "device",
                       "keep_checkpoints", "label_fidelity"}


def parse_args(argv=None) -> Config:
    fields = {f.name: f for f in dataclasses.fields(Config)}
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, f in fields.items():
        flag = "--" + name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(flag, type=TYPES[str(f.type).replace(" | None", "")], default=None, choices=CHOICES.get(name))
    given = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    values = {k: f.default for k, f in fields.items()}
    values.update(PRESETS[given.get("preset", "paper")])
    loaded = {}
    if given.get("config"):
        import yaml

        path = Path(given["config"])
        if not path.is_file():
            raise SystemExit(f"--config: no such file {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(loaded) - set(fields))
        if unknown:
            raise SystemExit(f"--config {path}: unknown keys {unknown}; valid keys: {sorted(fields)}")
        for k, v in loaded.items():
            if k in CHOICES and v not in CHOICES[k]:
                raise SystemExit(f"--config {path}: {k}={v!r} is not one of {CHOICES[k]}")
        values.update(loaded)
        if "preset" in loaded and "preset" not in given:
            values.update({k: v for k, v in PRESETS[loaded["preset"]].items() if k not in loaded})
    values.update(given)
    if not values["compare"]:  # a preset's method option where the method takes none (see PRESETS)
        for k in APPLIES:
            if k not in given and k not in loaded and values["mix"] not in APPLIES[k]:
                values[k] = None
    cfg = Config(**values)
    check(cfg)
    return cfg


def check(cfg: Config) -> None:
    """Reject bad values before anything is built."""
    for name in ("epochs", "batch_size", "resize", "crop", "workers", "eval_every"):
        if getattr(cfg, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.mix_prob is not None and not 0.0 <= cfg.mix_prob <= 1.0:
        raise SystemExit(f"--mix-prob must be in [0, 1], got {cfg.mix_prob}")
    if cfg.mix_beta is not None and not cfg.mix_beta > 0:
        raise SystemExit(f"--mix-beta must be > 0, got {cfg.mix_beta}")
    if cfg.cam_resolution is not None and not 0.0 < cfg.cam_resolution <= 1.0:
        raise SystemExit(f"--cam-resolution must be in (0, 1], got {cfg.cam_resolution}")
    if cfg.cam_cache_every is not None and cfg.cam_cache_every < 0:
        raise SystemExit(f"--cam-cache-every must be >= 0 (0: off), got {cfg.cam_cache_every}")
    methods = cfg.compare.split(",") if cfg.compare else [cfg.mix]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"--compare: unknown method {m!r}; choose from {list(METHODS)}")
    for k, fits in APPLIES.items():
        v = getattr(cfg, k)
        if v is not None and not set(methods) & set(fits):
            flag = "--" + k.replace("_", "-")
            where = f"--compare {cfg.compare}" if cfg.compare else f"--mix {cfg.mix}"
            raise SystemExit(f"{flag} {v} does not apply to {where}: it applies to {', '.join(fits)}")
    if cfg.amp == "fp16" and cfg.device == "cpu":
        raise SystemExit(FP16_ON_CPU)
    if not 0 <= cfg.mix_warmup < cfg.epochs:
        raise SystemExit(f"--mix-warmup must be in [0, --epochs {cfg.epochs}), got {cfg.mix_warmup}")
    try:
        kept = [int(s) for s in cfg.keep_checkpoints.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--keep-checkpoints must be comma-separated epochs, got {cfg.keep_checkpoints!r}") from None
    if any(not 1 <= k <= cfg.epochs for k in kept):
        raise SystemExit(f"--keep-checkpoints: epochs must be in [1, {cfg.epochs}], got {cfg.keep_checkpoints!r}")
    if cfg.label_fidelity and cfg.data and not (Path(cfg.data) / "parts").is_dir():
        raise SystemExit(f"--label-fidelity needs the embedded set's part masks (the truth), and --data {cfg.data} "
                         f"has no parts/ folder: leave --data out to use the embedded set")
    if cfg.crop > cfg.resize:
        raise SystemExit(f"--crop {cfg.crop} is larger than --resize {cfg.resize}")
    try:
        steps = [int(s) for s in cfg.lr_steps.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--lr-steps must be comma-separated epochs, got {cfg.lr_steps!r}") from None
    if steps != sorted(steps):
        raise SystemExit(f"--lr-steps must be increasing, got {cfg.lr_steps!r}")
    if cfg.pretrained and not Path(cfg.pretrained).is_file():
        raise SystemExit(f"--pretrained: no such file {cfg.pretrained}")
    if cfg.resume and not Path(cfg.resume).is_file():
        raise SystemExit(f"--resume: no such file {cfg.resume}")


# ---------------------------------------------------------------- pieces


def for_method(cfg: Config, method: str) -> Config:
    """``cfg`` for one method of a comparison: the method options it does not take unset
    (``check`` made sure each applies to some compared method)."""
    return dataclasses.replace(cfg, mix=method, compare="",
                               **{k: None for k, fits in APPLIES.items() if method not in fits})


def build_mixer(cfg: Config, num_classes: int, dataset_size: int, device: torch.device):
    given = {k: getattr(cfg, k) for k in APPLIES if getattr(cfg, k) is not None}
    wrong = sorted(k for k in given if cfg.mix not in APPLIES[k])
    if wrong:  # check() refuses these for flags; this is for a Config built in code
        raise SystemExit(f"--mix {cfg.mix} takes no {', '.join('--' + k.replace('_', '-') for k in wrong)} "
                         f"(got {', '.join(str(given[k]) for k in wrong)})")
    opts = {"num_classes": num_classes}
    if "mix_prob" in given:
        opts["prob"] = cfg.mix_prob
    if "mix_beta" in given:
        opts["beta"] = cfg.mix_beta
    if cfg.mix == "snapmix":
        cache = CAMCache(size=dataset_size, refresh_every=cfg.cam_cache_every, device=device) if cfg.cam_cache_every else None
        opts.update(semantics=cfg.snapmix_semantics or "released", cam_resolution=cfg.cam_resolution or 1.0, cache=cache,
                    autocast=cfg.amp != "off", channels_last=True if cfg.channels_last else None)
    try:
        return build_mix(cfg.mix, **opts)
    except ValueError as e:
        raise SystemExit(f"--mix {cfg.mix}: {e}") from None


def logits_and_loss(model, images, target, *, amp: str, tdev: torch.device):
    """Forward + the mixed loss; Inception's auxiliary head adds 0.4 x, the mid-level
    branch 1 x the same mixed loss. Returns (main logits, loss)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    with torch.autocast(tdev.type, dtype=dtype, enabled=dtype is not None):
        out = model(images)
    extra = None
    if isinstance(out, tuple) and not hasattr(out, "aux_logits"):  # MidLevel: (backbone output, branch logits)
        out, extra = out
    loss = 0.0
    if hasattr(out, "aux_logits"):  # torchvision InceptionOutputs in train mode
        loss = 0.4 * mixed_cross_entropy(out.aux_logits.float(), target)
        out = out.logits
    loss = loss + mixed_cross_entropy(out.float(), target)
    if extra is not None:
        loss = loss + mixed_cross_entropy(extra.float(), target)
    return out, loss


@torch.no_grad()
def evaluate(model, loader, tdev, *, channels_last: bool = False) -> tuple[float, float]:
    """(top-1, top-1 of logits + branch logits); reduced across processes."""
    model.eval()
    c = torch.zeros(3, dtype=torch.float64)
    for b in loader:
        out = model(b.images.contiguous(memory_format=torch.channels_last) if channels_last else b.images)
        fused = None
        if isinstance(out, tuple):
            out, br = out
            fused = out + br
        c[0] += (out.argmax(1) == b.labels).sum().item()
        c[1] += ((fused if fused is not None else out).argmax(1) == b.labels).sum().item()
        c[2] += len(b)
    if dist.is_initialized():
        c = c.to(tdev)
        dist.all_reduce(c)
        c = c.cpu()
    return (c[0] / c[2]).item(), (c[1] / c[2]).item()


def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """One update. Under --amp fp16 the scaler multiplies the loss before backward, so
    small fp16 gradients do not flush to zero, and unscales them before the step
    (skipping a step whose gradients overflowed); otherwise it passes through."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash leaves the previous checkpoint intact


def seed_epoch(cfg: Config, epoch: int, rank: int, mixer) -> None:
    """Every generator an epoch draws from is reseeded from (seed, purpose, epoch, rank)
    (dali_snapmix/seeding.py; the loader derives its own from (seed, epoch)): resuming
    at an epoch boundary replays exactly, with no generator state in the checkpoint."""
    s = torch_seed(cfg.seed, "globals", epoch=epoch, rank=rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    mixer.rng = generator(cfg.seed, "mixer", epoch=epoch, rank=rank)


def after_training(cfg: Config, model, train_src, test_src, parts_root, spec, device, tdev, out: Path) -> dict:
    """What --save-samples and --label-fidelity ask for, with the trained model: one
    training batch mixed and drawn (samples.png), and the method's label error on the
    embedded test split (dali_snapmix/fidelity.py). Draws from its own generators, after
    the run, so it changes nothing the run computed."""
    from dali_snapmix.fidelity import PartMasks, measure, part_truth, snapshot
    from dali_snapmix.mix import BoxParams, CutMix, SnapMix
    from dali_snapmix.viz import save_sample_grid

    found = {}
    # the loaders' epoch cfg.epochs: crops and order no training epoch drew
    common = dict(spec=spec, device=device, seed=cfg.seed, workers=cfg.workers)
    if cfg.save_samples:
        loader = make_loader(cfg.data_loader, train_src, batch_size=cfg.batch_size, train=True, **common)
        loader.set_epoch(cfg.epochs)
        mix = build_mixer(cfg, train_src.num_classes, len(train_src), tdev)
        mix.rng = generator(cfg.seed, "samples")
        b = next(iter(loader))
        params = mix.sample(b.images, b.labels)
        model.train()  # as in training: the released SnapMix CAM pass runs in train mode
        restore = snapshot(model)
        target = mix(b.images, b.labels, model=model, geometry=b, params=params)
        restore()
        parts = truth = None
        if parts_root is not None:
            parts, held = PartMasks(train_src.paths, root=parts_root).in_crops(b, spec.crop)
            if isinstance(params, BoxParams):
                truth = part_truth(parts, held, b.labels, params)
        save_sample_grid(out / "samples.png", out=target, params=params, mean=spec.mean, std=spec.std,
                         cam=getattr(mix, "last_cam", None), parts=parts, truth=truth,
                         title=f"{cfg.model} {cfg.mix}, trained {cfg.epochs} epochs: y_a:w_a y_b:w_b")
        del b
    if cfg.label_fidelity:
        mix = build_mixer(cfg, test_src.num_classes, len(test_src), tdev)
        if not isinstance(mix, (CutMix, SnapMix)):
            found["label_error"] = None  # no box, no part truth: baseline, Mixup, CutOut
        else:
            loader = make_loader(cfg.data_loader, test_src, batch_size=cfg.batch_size, train=True, **common)
            r = measure(mix, model=model, loader=loader, masks=PartMasks(test_src.paths, root=parts_root),
                        epochs=(cfg.epochs,), seed=cfg.seed)
            r.pop("rows")
            found["label_error"] = r
            print(f"label fidelity ({cfg.mix}, test split, one epoch of random crops): mean abs error {r['mae']:.3f} "
                  f"(w_a {r['mae_a']:.3f}, w_b {r['mae_b']:.3f}), lies {r['lies']:.1%} of {r['weights']} weights; "
                  f"{r['excluded']} of {r['mixed']} mixed samples without truth")
    return found


def save_plot(path: Path, history: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ev = [h for h in history if h.get("top1") is not None]
    ax.plot([h["epoch"] + 1 for h in ev], [h["top1"] for h in ev], marker="o", label="top-1")
    if any(h.get("top1_fused") != h.get("top1") for h in ev):
        ax.plot([h["epoch"] + 1 for h in ev], [h["top1_fused"] for h in ev], marker=".", label="top-1 (baseline+ fused)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- training


def train(cfg: Config) -> dict:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.device)
    # under torchrun (its env:// variables are set) a process group is made even for one
    # process, so a one-GPU torchrun run exercises NCCL as a larger one does
    if cfg.amp == "fp16" and device == "cpu":  # --device auto on a machine without a GPU
        raise SystemExit(FP16_ON_CPU)
    if (world > 1 or "MASTER_ADDR" in os.environ) and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "gpu" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device == "gpu":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdev = torch.device("cuda", torch.cuda.current_device()) if device == "gpu" else torch.device("cpu")
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    if cfg.data:
        root = Path(cfg.data)
        train_src = ImageSource.from_folder(root / "train")
        test_src = ImageSource.from_folder(root / "test")
    else:
        ds = ensure_synthetic_birds(train_per_class=BIRDS["train_per_class"], test_per_class=BIRDS["test_per_class"])
        root = ds.root
        train_src, test_src = ImageSource.from_folder(ds.train_dir), ImageSource.from_folder(ds.test_dir)
    K = train_src.num_classes
    mean, std = input_normalisation(cfg.model)  # what the model's pretrained weights expect
    spec = TransformSpec(resize=cfg.resize, crop=cfg.crop, resize_mode=cfg.resize_mode, mean=mean, std=std)
    common = dict(spec=spec, device=device, seed=cfg.seed, workers=cfg.workers)
    train_loader = make_loader(cfg.data_loader, train_src, batch_size=cfg.batch_size, train=True, **common)
    test_loader = make_loader(cfg.data_loader, test_src, batch_size=cfg.batch_size, train=False, **common)

    torch.manual_seed(torch_seed(cfg.seed, "model_init"))  # same initial weights on every rank
    try:
        backbone = build_model(cfg.model, num_classes=K)
    except ValueError as e:
        raise SystemExit(f"--model: {e}") from None
    if cfg.pretrained:
        try:
            missing, unexpected = load_pretrained(backbone, cfg.pretrained)
        except ValueError as e:
            raise SystemExit(f"--pretrained: {e}") from None
        head = classifier_of(backbone)
        head_keys = {n for n, p in backbone.named_parameters() if any(p is q for q in head.parameters())}
        if head_keys & {m.split(" ")[0] for m in missing}:  # a new classifier for this dataset
            init_new_head(head)
        if rank == 0:
            print(f"pretrained {cfg.pretrained}: missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}")
    model: nn.Module = backbone
    if cfg.midlevel:
        try:
            layer, width = mid_layer(backbone)
        except ValueError as e:
            raise SystemExit(f"--midlevel: {e}") from None
        model = MidLevel(backbone, layer, width, K)
    model = model.to(tdev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    # two learning rates for a pretrained body (--pretrained, or a model that ships its
    # weights): new layers (classifier, branch) get lr, the body lr_pretrained
    pretrained_body = bool(cfg.pretrained) or cfg.model in SHIPS_WEIGHTS
    new = {id(p) for p in classifier_of(backbone).parameters()}
    if cfg.midlevel:
        new |= {id(p) for n, p in model.named_parameters() if not n.startswith("backbone.")}
    params = list(model.parameters())
    groups = [{"params": [p for p in params if id(p) in new], "lr": cfg.lr},
              {"params": [p for p in params if id(p) not in new], "lr": cfg.lr_pretrained if pretrained_body else cfg.lr}]
    opt = torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
    steps = [int(s) for s in cfg.lr_steps.split(",") if s.strip()]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=cfg.lr_gamma)
    mixer = build_mixer(cfg, K, len(train_src), tdev)
    # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
    scaler = torch.amp.GradScaler(tdev.type, enabled=cfg.amp == "fp16")
    unmixed = build_mix("baseline", num_classes=K)  # the --mix-warmup epochs
    kept = {int(k) for k in cfg.keep_checkpoints.split(",") if k.strip()}
    ddp = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model

    start, history = 0, []
    if cfg.resume:
        ck = torch.load(cfg.resume, map_location="cpu", weights_only=False)
        theirs = {k: v for k, v in ck["config"].items() if k not in NOT_IN_RESUME_CHECK}
        ours = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_RESUME_CHECK}
        diff = {k: (theirs.get(k), ours[k]) for k in ours if theirs.get(k) != ours[k]}
        if diff:
            raise SystemExit(f"--resume {cfg.resume} was written with a different config: {diff} (checkpoint, now)")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        mixer.load_state_dict(ck["mixer"])  # the CAM cache and its counters
        start, history = ck["epoch"], ck["history"]
        if rank == 0:
            print(f"resumed from {cfg.resume} at epoch {start}")

    writer = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter  # only when tensorboard is installed

            writer = SummaryWriter(str(out / "tb"))
        except ImportError:
            print("tensorboard is not installed: no tb/ logs, log.jsonl only (extra 'tensorboard': "
                  "pip install 'dali-snapmix[tensorboard]')")
    if rank == 0:
        backend = dist.get_backend() if dist.is_initialized() else "none"
        print(f"device={device} world={world} backend={backend} loader={cfg.data_loader} model={cfg.model} mix={cfg.mix} "
              f"train={len(train_src)} test={len(test_src)} classes={K} steps/epoch={len(train_loader)} "
              f"normalise mean={spec.mean} std={spec.std}")

    from tqdm import tqdm

    step = start * len(train_loader)
    seen_indices: list[int] = []
    for epoch in range(start, cfg.epochs):
        seed_epoch(cfg, epoch, rank, mixer)
        active = mixer if epoch >= cfg.mix_warmup else unmixed
        mixer.set_epoch(epoch)
        cams_before = dict(getattr(mixer, "cache_stats", {}))
        train_loader.set_epoch(epoch)
        model.train()
        t0, t_wait, seen, loss_sum, mix_time = time.perf_counter(), 0.0, 0, 0.0, 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=rank != 0 or not sys.stderr.isatty(), leave=False, file=sys.stderr)
        t_ready = time.perf_counter()
        for b in bar:
            t_wait += time.perf_counter() - t_ready
            if cfg.record_indices:
                seen_indices += b.indices.tolist()
            tm = time.perf_counter()
            target = active(b.images, b.labels, model=backbone, geometry=b)
            mix_time += time.perf_counter() - tm
            x = target.images.contiguous(memory_format=torch.channels_last) if cfg.channels_last else target.images
            _, loss = logits_and_loss(ddp, x, target, amp=cfg.amp, tdev=tdev)
            if not torch.isfinite(loss):
                raise SystemExit(f"loss is {loss.item()} at step {step} (epoch {epoch + 1}); "
                                 f"the last good checkpoint is {out / 'last.pt'}")
            backward_step(loss, opt, scaler)
            step += 1
            seen += len(b)
            loss_sum += loss.item() * len(b)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", lr=f"{opt.param_groups[0]['lr']:.2g}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            t_ready = time.perf_counter()
        sched.step()
        dt = time.perf_counter() - t0
        last = epoch == cfg.epochs - 1
        top1 = fused = None
        if (epoch + 1) % cfg.eval_every == 0 or last:
            top1, fused = evaluate(ddp, test_loader, tdev, channels_last=cfg.channels_last)
        row = dict(epoch=epoch, loss=loss_sum / seen, top1=top1, top1_fused=fused if cfg.midlevel else top1,
                   seconds=dt, images_per_s=seen * world / dt, data_wait_s=t_wait, mix_s=mix_time,
                   lr=opt.param_groups[0]["lr"])
        if getattr(mixer, "cache", None) is not None:
            mixer.cache.sync()  # every process gets the maps the others computed (a collective)
            # samples whose CAMs came from each source this epoch, over all processes
            cams = {k: v - cams_before.get(k, 0) for k, v in mixer.cache_stats.items()}
            if dist.is_initialized():
                c = torch.tensor(list(cams.values()), dtype=torch.int64, device=tdev)
                dist.all_reduce(c)
                cams = dict(zip(cams, c.tolist()))
            row["cams"] = cams
        history.append(row)
        if cfg.record_indices:
            (out / f"indices_rank{rank}_epoch{epoch}.json").write_text(json.dumps(seen_indices))
            seen_indices = []
        if rank == 0:
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            if writer is not None:
                for k in ("loss", "top1", "images_per_s", "data_wait_s"):
                    if row[k] is not None:
                        writer.add_scalar(k, row[k], epoch)
            # no generator states: seed_epoch reseeds every generator at the next epoch
            save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict(), "mixer": mixer.state_dict(), "epoch": epoch + 1,
                         "history": history, "loader": {"seed": cfg.seed, "epoch": epoch + 1},
                         "config": dataclasses.asdict(cfg)}, out / "last.pt")
            if epoch + 1 in kept:
                shutil.copyfile(out / "last.pt", out / f"epoch{epoch + 1}.pt")
            acc = "" if top1 is None else f" top1 {top1:.4f}" + (f" fused {fused:.4f}" if cfg.midlevel else "")
            if "cams" in row:
                acc += " cams " + " ".join(f"{k} {v}" for k, v in row["cams"].items())
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}{acc} {row['images_per_s']:.0f} img/s "
                  f"(data wait {t_wait:.1f}s, mixing {mix_time:.1f}s, {dt:.1f}s)", flush=True)
    ev = [h for h in history if h["top1"] is not None]
    key = "top1_fused" if cfg.midlevel else "top1"
    best = max(ev, key=lambda h: h[key])
    tail = ev[-10:]
    result = dict(method=cfg.mix, top1=ev[-1][key], best_top1=best[key], best_epoch=best["epoch"] + 1,
                  mean_last10=sum(h[key] for h in tail) / len(tail),
                  mean_last3=sum(h[key] for h in ev[-3:]) / len(ev[-3:]),
                  seconds_per_epoch=float(np.median([h["seconds"] for h in history])),
                  images_per_s=history[-1]["images_per_s"])
    if rank == 0 and (cfg.save_samples or cfg.label_fidelity):
        parts_root = root if (root / "parts").is_dir() else None  # the embedded set's part masks
        result.update(after_training(cfg, backbone, train_src, test_src, parts_root, spec, device, tdev, out))
    if rank == 0:
        save_plot(out / "accuracy.png", history, f"{cfg.model} {cfg.mix}")
        (out / "result.json").write_text(json.dumps(result, indent=2))
        lf = result.get("label_error")
        print(f"RESULT method={cfg.mix} top1={result['top1']:.4f} best_top1={result['best_top1']:.4f} "
              f"(epoch {result['best_epoch']}) mean_last{len(tail)}={result['mean_last10']:.4f} "
              f"images/s={result['images_per_s']:.1f}" + (f" label_error={lf['mae']:.3f}" if lf else ""))
    if writer is not None:
        writer.close()
    return result


def main(argv=None) -> dict | list[dict]:
    cfg = parse_args(argv)
    if not cfg.compare:
        return train(cfg)
    results = []
    for m in cfg.compare.split(","):
        results.append(train(dataclasses.replace(for_method(cfg, m), out=str(Path(cfg.out) / m))))
    base = next((r for r in results if r["method"] == "baseline"), None)
    print(f"\n{cfg.model}, {cfg.epochs} epochs, crop {cfg.crop}, batch {cfg.batch_size}, seed {cfg.seed}"
          + (f", mixing from epoch {cfg.mix_warmup + 1}" if cfg.mix_warmup else ""))
    fid = cfg.label_fidelity
    print("| method | best top-1 | mean top-1 (last 3 evaluations) | s / epoch | augmentation overhead |"
          + (" label error (MAE) | lies |" if fid else ""))
    print("|---|---|---|---|---|" + ("---|---|" if fid else ""))
    for r in results:
        over = f"{r['seconds_per_epoch'] / base['seconds_per_epoch'] - 1:+.1%}" if base else "n/a"
        lf = r.get("label_error")
        extra = (f" {lf['mae']:.3f} | {lf['lies']:.1%} |" if lf else " n/a (nothing pasted) | |") if fid else ""
        print(f"| {r['method']} | {r['best_top1']:.4f} | {r['mean_last3']:.4f} | {r['seconds_per_epoch']:.1f} | {over} |"
              + extra)
    return results


if __name__ == "__main__":
    main()
