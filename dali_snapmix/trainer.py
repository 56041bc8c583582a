"""Train a fine-grained classifier on DALI batches with SnapMix (or another mixing method):
the trainer behind ``train_dali.py``, one file read top to bottom.

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

import dataclasses
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from .config import (
    BIRDS,
    CAM_PASS,
    FP16_ON_CPU,
    OPTIONS,
    RUN_ONLY,
    SALIENCY_BN_FROM_CLEAN_LAM,
    TAKES_NORMALISATION,
    Config,
    for_method,
    mixing_on,
    options_not_taken,
    parse_args,
)
from .data import Batch, ImageSource, TransformSpec, ensure_synthetic_birds, make_loader, resolve_device
from .mix import LOSSES, CAMCache, MixMethod, build_mix, hidden_mixing
from .mix.automix import teacher_parts
from .models import (
    SHIPS_WEIGHTS,
    MidLevel,
    build_model,
    classifier_of,
    fixed_attention,
    init_new_head,
    input_normalisation,
    load_pretrained,
)
from .seeding import generator, torch_seed

__all__ = ["Config", "main", "parse_args", "train"]

# ---------------------------------------------------------------- pieces


def build_mixer(cfg: Config, num_classes: int, dataset_size: int, device: torch.device, *,
                model: nn.Module | None = None, steps_per_epoch: int | None = None) -> MixMethod:
    """The method ``cfg.mix`` with the options given (None: the method's default); the
    CAM pass of a method that has one follows --amp and --channels-last. AutoMix takes
    its teacher from ``model`` (the classifier) and its schedules from ``steps_per_epoch``."""
    wrong = options_not_taken(cfg, [cfg.mix])
    if wrong:  # check() refuses these for flags; this is for a Config built in code
        raise SystemExit(f"--mix {cfg.mix} takes no {', '.join('--' + k.replace('_', '-') for k in wrong)} "
                         f"(got {', '.join(str(v) for v in wrong.values())})")
    opts = {OPTIONS[k][0]: getattr(cfg, k) for k in OPTIONS if getattr(cfg, k) is not None}
    if opts.get("cache") is not None:
        opts["cache"] = CAMCache(size=dataset_size, refresh_every=opts["cache"], device=device) if opts["cache"] else None
    if cfg.mix in CAM_PASS:
        opts.update(autocast=cfg.amp != "off", channels_last=True if cfg.channels_last else None)
    if cfg.mix in TAKES_NORMALISATION:
        mean, std = input_normalisation(cfg.model)
        opts.update(mean=mean, std=std)
    if cfg.mix in SALIENCY_BN_FROM_CLEAN_LAM and cfg.clean_lam:
        opts.update(saliency_bn="train")
    if cfg.mix == "automix":
        opts.update(automix_teacher(cfg, model, num_classes, device), epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
                    channels_last=cfg.channels_last)
    name, weights = opts.pop("attention_model", None), opts.pop("attention_weights", None)
    if name is not None:  # AttentiveMix's fixed network, on the batches' device
        try:
            opts.update(fixed_attention(name, weights=weights, device=device))
        except ValueError as e:
            raise SystemExit(f"--attentive-model {name}: {e}") from None
    try:
        return build_mix(cfg.mix, num_classes=num_classes, **opts)
    except ValueError as e:
        raise SystemExit(f"--mix {cfg.mix}: {e}") from None


def automix_teacher(cfg: Config, model: nn.Module, num_classes: int, device: torch.device) -> dict:
    """AutoMix's keywords: its teacher, a new ``cfg.model`` with ``model``'s weights (a
    copy without the hooks --midlevel puts on the classifier), the teacher's stride-16
    stage for the Mix Block, whose initial weights come from their own seed."""
    if model is None:
        raise SystemExit("--mix automix needs the classifier it follows: build_mixer(..., model=, steps_per_epoch=)")
    teacher = build_model(cfg.model, num_classes=num_classes)
    teacher = teacher.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    try:
        parts = teacher_parts(model, teacher=teacher)
    except ValueError as e:
        raise SystemExit(f"--mix automix: its Mix Block reads a stride-16 stage: {e}") from None
    torch.manual_seed(torch_seed(cfg.seed, "mix_block"))
    return parts


def logits_and_loss(model, images, target, *, amp: str, tdev: torch.device, loss: str = "ce"):
    """Forward + the mixed loss (``loss``: ce, the mixed cross-entropy; bce, BCE on
    softmax); Inception's auxiliary head adds 0.4 x, the mid-level branch 1 x the same
    loss. Returns (main logits, loss)."""
    criterion = LOSSES[loss]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    with torch.autocast(tdev.type, dtype=dtype, enabled=dtype is not None), hidden_mixing(target):
        out = model(images)
    extra = None
    if isinstance(out, tuple) and not hasattr(out, "aux_logits"):  # MidLevel: (backbone output, branch logits)
        out, extra = out
    total = 0.0
    if hasattr(out, "aux_logits"):  # torchvision InceptionOutputs in train mode
        total = 0.4 * criterion(out.aux_logits.float(), target)
        out = out.logits
    total = total + criterion(out.float(), target)
    if extra is not None:
        total = total + criterion(extra.float(), target)
    return out, total


def clean_loss(model, images, labels, *, weight: float, loss: str, amp: str, tdev: torch.device) -> torch.Tensor:
    """--clean-lam: ``weight`` x the clean batch's cross-entropy (heads as
    :func:`logits_and_loss`), x 2 / C under --loss bce, as PuzzleMix and Co-Mixup scale it
    to the BCE's gradients. Added to the mixed loss before the one backward: the optimizer
    steps on both gradients, as those releases accumulate them."""
    logits, ce = logits_and_loss(model, images, MixMethod.unmixed(images, labels), amp=amp, tdev=tdev)
    return weight * (2.0 / logits.shape[1] if loss == "bce" else 1.0) * ce


@torch.no_grad()
def evaluate(model, loader, tdev, *, channels_last: bool = False) -> tuple[float, float]:
    """(top-1, top-1 of logits + branch logits); reduced across processes. The model is
    left in the mode it was in."""
    was_training = model.training
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
    model.train(was_training)
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


def seed_epoch(cfg: Config, epoch: int, rank: int) -> np.random.Generator:
    """Every generator an epoch draws from is reseeded from (seed, purpose, epoch, rank)
    (dali_snapmix/seeding.py; the loader derives its own from (seed, epoch)): resuming
    at an epoch boundary replays exactly, with no generator state in the checkpoint.
    Returns the epoch's generator for the mixer's params."""
    s = torch_seed(cfg.seed, "globals", epoch=epoch, rank=rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return generator(cfg.seed, "mixer", epoch=epoch, rank=rank)


class EpochMeter:
    """One epoch's clock: wall time, time waiting for the loader, time mixing, images
    and the running loss."""

    def __init__(self) -> None:
        self.t0 = self.ready = time.perf_counter()
        self.wait = self.mixing = self.loss_sum = 0.0
        self.seen = self.steps = 0

    def arrived(self) -> None:
        self.wait += time.perf_counter() - self.ready

    def mixed(self, since: float) -> None:
        self.mixing += time.perf_counter() - since

    def stepped(self, n: int, loss: float) -> None:
        self.steps += 1
        self.seen += n
        self.loss_sum += loss * n
        self.ready = time.perf_counter()

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    def row(self, world: int) -> dict:
        dt = time.perf_counter() - self.t0
        return dict(loss=self.loss, seconds=dt, images_per_s=self.seen * world / dt, data_wait_s=self.wait,
                    mix_s=self.mixing)


def after_training(cfg: Config, model, train_src, test_src, parts_root, spec, device, tdev, out: Path, *,
                   mixer: MixMethod | None = None) -> dict:
    """What --save-samples and --label-fidelity ask for, with the trained model: one
    training batch mixed and drawn (samples.png), and the method's label error on the
    embedded test split (dali_snapmix/fidelity.py). Draws from its own generators, after
    the run, so it changes nothing the run computed. ``mixer``: the run's, which mixes
    here (not training) where its masks come from learned state (AutoMix)."""
    from .fidelity import PartMasks, measure, part_truth, snapshot
    from .mix import BlendParams, BoxParams, MaskParams
    from .mix.comixup import CoMixMaskParams
    from .viz import save_sample_grid

    pairs = (BoxParams, MaskParams, BlendParams)  # where a pair's part truth is defined (fidelity.part_truth)
    scored = (*pairs, CoMixMaskParams)  # and a group's (fidelity.group_label_errors)

    found = {}
    learned = mixer.train(False) if mixer is not None and mixer.learned else None
    # the loaders' epoch cfg.epochs: crops and order no training epoch drew
    common = dict(spec=spec, device=device, seed=cfg.seed, workers=cfg.workers)
    if cfg.save_samples:
        loader = make_loader(cfg.data_loader, train_src, batch_size=cfg.batch_size, train=True, **common)
        loader.set_epoch(cfg.epochs)
        mix = learned or build_mixer(cfg, train_src.num_classes, len(train_src), tdev)
        b = next(iter(loader))
        params = mix.sample(b.images, b.labels, rng=generator(cfg.seed, "samples"))
        model.train()  # as in training: the released SnapMix CAM pass runs in train mode
        restore = snapshot(model)
        params = mix.resolve(b.images, b.labels, params, model=model)  # Guided-AP's masks need the model
        target = mix.apply(b.images, b.labels, params, model=model, geometry=b.geometry)
        restore()
        parts = truth = None
        if parts_root is not None:
            parts, held = PartMasks(train_src.paths, root=parts_root).in_crops(b, spec.crop)
            if isinstance(params, pairs):
                truth = part_truth(parts, held, b.labels, params)
        hidden = getattr(target, "hidden", None)  # Manifold Mixup: the images enter unmixed
        where = f"\n(mixed inside the model at {hidden.name}: the inputs are shown)" if hidden is not None else ""
        save_sample_grid(out / "samples.png", out=target, params=params, mean=spec.mean, std=spec.std,
                         cam=getattr(mix, "last_cam", None), parts=parts, truth=truth,
                         title=f"{cfg.model} {cfg.mix}, trained {cfg.epochs} epochs: label:weight of each label{where}",
                         show_masks=mix.learned)
        del b
    if cfg.label_fidelity:
        mix = learned or build_mixer(cfg, test_src.num_classes, len(test_src), tdev)
        if not issubclass(mix.resolved_type, scored):
            found["label_error"] = None  # no pair or group to score: baseline, CutOut, RICAP's four regions
        else:
            loader = make_loader(cfg.data_loader, test_src, batch_size=cfg.batch_size, train=True, **common)
            r = measure(mix, model=model, loader=loader, masks=PartMasks(test_src.paths, root=parts_root),
                        epochs=(cfg.epochs,), seed=cfg.seed)
            r.pop("rows"), r.pop("mixed_share")
            found["label_error"] = r
            sides = f" (w_a {r['mae_a']:.3f}, w_b {r['mae_b']:.3f})" if r["pairs_diff"] else ""  # a pair's two sides
            print(f"label fidelity ({cfg.mix}, test split, one epoch of random crops): mean abs error of the "
                  f"different-label weights {r['mae_diff']:.3f}{sides}; all "
                  f"weights as the loss applies them {r['mae']:.3f}, lies {r['lies']:.1%} of {r['weights']}; "
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


@dataclass
class Run:
    """Everything a run builds in setup and its steps use."""

    cfg: Config
    world: int
    rank: int
    device: str  # "gpu" | "cpu"
    tdev: torch.device
    out: Path
    root: Path  # the dataset's root (parts/ beside train/ and test/ for the embedded set)
    train_src: ImageSource
    test_src: ImageSource
    spec: TransformSpec
    train_loader: object
    test_loader: object
    backbone: nn.Module  # what the mixer takes its CAMs from
    model: nn.Module  # the backbone, or the backbone + the mid-level branch
    ddp: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    mixer: MixMethod
    unmixed: MixMethod  # the epochs --mix-warmup, --mix-cycle and --mix-cooldown leave unmixed
    writer: object = None
    start: int = 0
    history: list[dict] = field(default_factory=list)


def start_process(cfg: Config) -> tuple[int, int, str, torch.device]:
    """(world, rank, device, torch device). Under torchrun (its env:// variables set) a
    process group is made even for one process, so a one-GPU torchrun run exercises
    NCCL as a larger one does."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.device)
    if cfg.amp == "fp16" and device == "cpu":  # --device auto on a machine without a GPU
        raise SystemExit(FP16_ON_CPU)
    if (world > 1 or "MASTER_ADDR" in os.environ) and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "gpu" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device == "gpu":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdev = torch.device("cuda", torch.cuda.current_device()) if device == "gpu" else torch.device("cpu")
    return world, rank, device, tdev


def open_data(cfg: Config, device: str):
    """(root, train source, test source, spec, train loader, test loader)."""
    if cfg.data:
        root = Path(cfg.data)
    else:
        root = ensure_synthetic_birds(train_per_class=BIRDS["train_per_class"], test_per_class=BIRDS["test_per_class"]).root
    train_src, test_src = ImageSource.from_folder(root / "train"), ImageSource.from_folder(root / "test")
    mean, std = input_normalisation(cfg.model)  # what the model's pretrained weights expect
    spec = TransformSpec(resize=cfg.resize, crop=cfg.crop, resize_mode=cfg.resize_mode, mean=mean, std=std)
    common = dict(spec=spec, device=device, seed=cfg.seed, workers=cfg.workers)
    train_loader = make_loader(cfg.data_loader, train_src, batch_size=cfg.batch_size, train=True, **common)
    test_loader = make_loader(cfg.data_loader, test_src, batch_size=cfg.batch_size, train=False, **common)
    return root, train_src, test_src, spec, train_loader, test_loader


def build_network(cfg: Config, num_classes: int, tdev: torch.device, rank: int) -> tuple[nn.Module, nn.Module]:
    """(backbone, model): the classifier, its pretrained weights, and the mid-level branch."""
    torch.manual_seed(torch_seed(cfg.seed, "model_init"))  # same initial weights on every rank
    try:
        backbone = build_model(cfg.model, num_classes=num_classes)
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
            model = MidLevel.on(backbone, num_classes)
        except ValueError as e:
            raise SystemExit(f"--midlevel: {e}") from None
    model = model.to(tdev)
    return backbone, model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def build_optimiser(cfg: Config, backbone: nn.Module, model: nn.Module):
    """(SGD, its step schedule). A pretrained body (--pretrained, or a model that ships its
    weights) learns at lr_pretrained, the new layers (classifier, branch) at lr."""
    pretrained_body = bool(cfg.pretrained) or cfg.model in SHIPS_WEIGHTS
    new = {id(p) for p in classifier_of(backbone).parameters()}
    if cfg.midlevel:
        new |= {id(p) for n, p in model.named_parameters() if not n.startswith("backbone.")}
    params = list(model.parameters())
    groups = [{"params": [p for p in params if id(p) in new], "lr": cfg.lr},
              {"params": [p for p in params if id(p) not in new], "lr": cfg.lr_pretrained if pretrained_body else cfg.lr}]
    opt = torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
    steps = [int(s) for s in cfg.lr_steps.split(",") if s.strip()]
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=cfg.lr_gamma)


def open_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter  # only when tensorboard is installed
    except ImportError:
        print("tensorboard is not installed: no tb/ logs, log.jsonl only (extra 'tensorboard': "
              "pip install 'dali-snapmix[tensorboard]')")
        return None
    return SummaryWriter(str(out / "tb"))


def setup(cfg: Config) -> Run:
    world, rank, device, tdev = start_process(cfg)
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    root, train_src, test_src, spec, train_loader, test_loader = open_data(cfg, device)
    K = train_src.num_classes
    backbone, model = build_network(cfg, K, tdev, rank)
    opt, sched = build_optimiser(cfg, backbone, model)
    run = Run(cfg=cfg, world=world, rank=rank, device=device, tdev=tdev, out=out, root=root, train_src=train_src,
              test_src=test_src, spec=spec, train_loader=train_loader, test_loader=test_loader, backbone=backbone,
              model=model, ddp=nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model,
              opt=opt, sched=sched, mixer=build_mixer(cfg, K, len(train_src), tdev, model=backbone,
                                                      steps_per_epoch=len(train_loader)),
              # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
              scaler=torch.amp.GradScaler(tdev.type, enabled=cfg.amp == "fp16"),
              unmixed=build_mix("baseline", num_classes=K), writer=open_writer(out) if rank == 0 else None)
    if rank == 0:
        backend = dist.get_backend() if dist.is_initialized() else "none"
        print(f"device={device} world={world} backend={backend} loader={cfg.data_loader} model={cfg.model} mix={cfg.mix} "
              f"train={len(train_src)} test={len(test_src)} classes={K} steps/epoch={len(train_loader)} "
              f"normalise mean={spec.mean} std={spec.std}")
    return run


def resume(run: Run) -> None:
    """Continue from --resume: weights, optimiser, schedule, scaler, the mixer's state
    (SnapMix's CAM cache and counters), the epoch and the history; refused when the
    checkpoint was written with settings that change what the run computes."""
    cfg = run.cfg
    ck = torch.load(cfg.resume, map_location="cpu", weights_only=False)
    # a setting the checkpoint lacks came after it was written: it trained with that setting's default
    theirs = {f.name: f.default for f in dataclasses.fields(Config)} | ck["config"]
    ours = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_ONLY}
    diff = {k: (theirs.get(k), ours[k]) for k in ours if theirs.get(k) != ours[k]}
    if diff:
        raise SystemExit(f"--resume {cfg.resume} was written with a different config: {diff} (checkpoint, now)")
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    run.scaler.load_state_dict(ck["scaler"])
    run.mixer.load_state_dict(ck["mixer"])
    run.start, run.history = ck["epoch"], ck["history"]
    if run.rank == 0:
        print(f"resumed from {cfg.resume} at epoch {run.start}")


def train_epoch(run: Run, epoch: int, on_batch: Callable[[int, int, Batch], None] | None = None) -> dict:
    """One pass over the training set: mix (from the epoch's own generator), forward,
    mixed loss, backward, step. ``on_batch(epoch, rank, batch)`` sees every batch first."""
    cfg = run.cfg
    from tqdm import tqdm

    rng = seed_epoch(cfg, epoch, run.rank)
    active = run.mixer if mixing_on(cfg, epoch) else run.unmixed
    run.mixer.set_epoch(epoch)
    run.train_loader.set_epoch(epoch)
    run.model.train()
    meter = EpochMeter()
    bar = tqdm(run.train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr,
               disable=run.rank != 0 or not sys.stderr.isatty())
    for b in bar:
        meter.arrived()
        if on_batch is not None:
            on_batch(epoch, run.rank, b)
        clean = None
        weight = cfg.clean_lam or active.clean_loss_weight  # --clean-lam, or the method's own (AutoMix's one-hot loss)
        if weight > 0 and active is run.mixer and cfg.mix != "baseline":  # a baseline step is clean already
            # before the mix, which writes b.images in place: a copy (the forward's graph keeps its input);
            # the module inside DDP: the one DDP forward is the mixed one, whose backward all-reduces both
            xc = b.images.clone(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
            clean = clean_loss(run.model, xc, b.labels, weight=weight, loss=cfg.loss, amp=cfg.amp, tdev=run.tdev)
        t = time.perf_counter()
        # the Batch itself: only SnapMix's cache reads its geometry (copied to the host then,
        # not on every step of every method)
        target = active.apply(b.images, b.labels, active.sample(b.images, b.labels, rng=rng), model=run.backbone,
                              geometry=b)
        meter.mixed(t)
        x = target.images.contiguous(memory_format=torch.channels_last) if cfg.channels_last else target.images
        _, loss = logits_and_loss(run.ddp, x, target, amp=cfg.amp, tdev=run.tdev, loss=cfg.loss)
        if clean is not None:
            loss = loss + clean
        if not torch.isfinite(loss):
            step = epoch * len(run.train_loader) + meter.steps
            raise SystemExit(f"loss is {loss.item()} at step {step} (epoch {epoch + 1}); "
                             f"the last good checkpoint is {run.out / 'last.pt'}")
        backward_step(loss, run.opt, run.scaler)
        run.mixer.after_step(run.backbone)  # AutoMix's teacher follows, mixed step or not
        meter.stepped(len(b), loss.item())
        bar.set_postfix(loss=f"{meter.loss:.3f}", lr=f"{run.opt.param_groups[0]['lr']:.2g}")
    run.sched.step()
    return meter.row(run.world)


def share_cams(run: Run, before: dict) -> dict | None:
    """SnapMix's cached mode: every process gets the maps the others computed this epoch
    (a collective); returns the samples whose CAMs came from each source, all processes."""
    cache = getattr(run.mixer, "cache", None)
    if cache is None:
        return None
    cache.sync()
    cams = {k: v - before.get(k, 0) for k, v in run.mixer.cache_stats.items()}
    if dist.is_initialized():
        c = torch.tensor(list(cams.values()), dtype=torch.int64, device=run.tdev)
        dist.all_reduce(c)
        cams = dict(zip(cams, c.tolist()))
    return cams


def checkpoint(run: Run, epoch: int, row: dict) -> None:
    """Rank 0: the epoch's log line, TensorBoard scalars, last.pt (and a kept copy)."""
    cfg, out = run.cfg, run.out
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    if run.writer is not None:
        for k in ("loss", "top1", "images_per_s", "data_wait_s"):
            if row[k] is not None:
                run.writer.add_scalar(k, row[k], epoch)
    # no generator states: seed_epoch reseeds every generator at the next epoch
    save_atomic({"model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
                 "scaler": run.scaler.state_dict(), "mixer": run.mixer.state_dict(), "epoch": epoch + 1,
                 "history": run.history, "loader": {"seed": cfg.seed, "epoch": epoch + 1},
                 "config": dataclasses.asdict(cfg)}, out / "last.pt")
    if epoch + 1 in {int(k) for k in cfg.keep_checkpoints.split(",") if k.strip()}:
        shutil.copyfile(out / "last.pt", out / f"epoch{epoch + 1}.pt")
    acc = "" if row["top1"] is None else f" top1 {row['top1']:.4f}" + (f" fused {row['top1_fused']:.4f}" if cfg.midlevel else "")
    if row.get("top1_teacher") is not None:
        acc += f" teacher {row['top1_teacher']:.4f}"
    if "cams" in row:
        acc += " cams " + " ".join(f"{k} {v}" for k, v in row["cams"].items())
    print(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}{acc} {row['images_per_s']:.0f} img/s "
          f"(data wait {row['data_wait_s']:.1f}s, mixing {row['mix_s']:.1f}s, {row['seconds']:.1f}s)", flush=True)


def finish(run: Run) -> dict:
    """The run's result (best and last top-1, means, speed), samples and label fidelity
    if asked, the accuracy plot and result.json."""
    cfg, history = run.cfg, run.history
    ev = [h for h in history if h["top1"] is not None]
    key = "top1_fused" if cfg.midlevel else "top1"
    best = max(ev, key=lambda h: h[key])
    tail = ev[-10:]
    result = dict(method=cfg.mix, top1=ev[-1][key], best_top1=best[key], best_epoch=best["epoch"] + 1,
                  mean_last10=sum(h[key] for h in tail) / len(tail),
                  mean_last3=sum(h[key] for h in ev[-3:]) / len(ev[-3:]),
                  seconds_per_epoch=float(np.median([h["seconds"] for h in history])),
                  images_per_s=history[-1]["images_per_s"])
    teacher = [h["top1_teacher"] for h in ev if "top1_teacher" in h]  # AutoMix's EMA teacher (its release
    if teacher:  # reports the best of its heads)
        result.update(top1_teacher=teacher[-1], best_top1_teacher=max(teacher))
    if run.rank != 0:
        return result
    if cfg.save_samples or cfg.label_fidelity:
        parts_root = run.root if (run.root / "parts").is_dir() else None  # the embedded set's part masks
        result.update(after_training(cfg, run.backbone, run.train_src, run.test_src, parts_root, run.spec, run.device,
                                     run.tdev, run.out, mixer=run.mixer))
    save_plot(run.out / "accuracy.png", history, f"{cfg.model} {cfg.mix}")
    (run.out / "result.json").write_text(json.dumps(result, indent=2))
    lf = result.get("label_error")
    print(f"RESULT method={cfg.mix} top1={result['top1']:.4f} best_top1={result['best_top1']:.4f} "
          f"(epoch {result['best_epoch']}) mean_last{len(tail)}={result['mean_last10']:.4f} "
          f"images/s={result['images_per_s']:.1f}" + (f" label_error={lf['mae_diff']:.3f}" if lf else "")
          + (f" top1_teacher={result['top1_teacher']:.4f}" if "top1_teacher" in result else ""))
    if run.writer is not None:
        run.writer.close()
    return result


def train(cfg: Config, *, on_batch: Callable[[int, int, Batch], None] | None = None) -> dict:
    """Setup, resume, then per epoch: train, evaluate, share the CAM cache, checkpoint."""
    run = setup(cfg)
    if cfg.resume:
        resume(run)
    for epoch in range(run.start, cfg.epochs):
        cams_before = dict(getattr(run.mixer, "cache_stats", {}))
        row = {"epoch": epoch, **train_epoch(run, epoch, on_batch)}
        top1 = fused = None
        if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1:
            top1, fused = evaluate(run.ddp, run.test_loader, run.tdev, channels_last=cfg.channels_last)
        row.update(top1=top1, top1_fused=fused if cfg.midlevel else top1, lr=run.opt.param_groups[0]["lr"])
        teacher = run.mixer.teacher if run.mixer.learned else None
        if top1 is not None and teacher is not None:  # AutoMix's EMA teacher: what its release's maintainers report
            row["top1_teacher"] = evaluate(teacher, run.test_loader, run.tdev, channels_last=cfg.channels_last)[0]
        cams = share_cams(run, cams_before)
        if cams is not None:
            row["cams"] = cams
        run.history.append(row)
        if run.rank == 0:
            checkpoint(run, epoch, row)
    return finish(run)


def main(argv=None) -> dict | list[dict]:
    cfg = parse_args(argv, description=__doc__)
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
          + (" label error (MAE, different-label) | lies (all weights) |" if fid else ""))
    print("|---|---|---|---|---|" + ("---|---|" if fid else ""))
    for r in results:
        over = f"{r['seconds_per_epoch'] / base['seconds_per_epoch'] - 1:+.1%}" if base else "n/a"
        lf = r.get("label_error")
        extra = (f" {lf['mae_diff']:.3f} | {lf['lies']:.1%} |" if lf else " n/a (nothing pasted) | |") if fid else ""
        print(f"| {r['method']} | {r['best_top1']:.4f} | {r['mean_last3']:.4f} | {r['seconds_per_epoch']:.1f} | {over} |"
              + extra)
    return results


if __name__ == "__main__":
    main()
