"""The trainer's settings: one dataclass, its presets, the command line and its checks.

Settings resolve as: dataclass defaults < ``--preset`` < ``--config`` YAML < flags.
The trainer (:mod:`dali_snapmix.trainer`, run by ``train_dali.py``) trains from a
:class:`Config`; the benchmarks build theirs here too.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .mix import METHODS
from .mix.mixed_example import VARIANTS as MIXED_EXAMPLE_VARIANTS

__all__ = ["APPLIES", "BIRDS", "CAM_PASS", "CHOICES", "FP16_ON_CPU", "OPTIONS", "PRESETS", "RUN_ONLY", "Config", "check",
           "for_method", "mix_cycle", "mixing_on", "options_not_taken", "parse_args"]


def run_only(default):
    """A setting that does not change what a run computes (output folder, logging,
    workers): a run may be resumed with another value of it."""
    return dataclasses.field(default=default, metadata={"run_only": True})


@dataclass
class Config:
    config: str = run_only("")  # YAML file whose keys set defaults (flags still win)
    preset: str = "paper"  # paper | scratch (Table 4 setting) | demo (CPU-sized, embedded data)
    data: str = ""  # ImageFolder root with train/ and test/; empty: the embedded birds set
    data_loader: str = "dali"  # dali | pytorch (the plain torchvision fallback, same plan)
    device: str = run_only("auto")  # auto | gpu | cpu
    model: str = "resnet50"  # small_cnn | resnet18/34/50/101 | densenet121 | inception_v3 | timm:<name>
    pretrained: str = ""  # local state dict for the backbone (nothing is ever downloaded)
    midlevel: bool = False  # add the paper's baseline+ mid-level branch (ResNet, small_cnn)
    mix: str = "snapmix"  # baseline | mixup | cutmix | as-cutmix | cutout | snapmix | resizemix | ricap | fmix | smoothmix | samplepairing | mixed-example | saliencymix | manifold | guided-sr | guided-ap | attentivemix | puzzlemix | comixup | automix
    # method options (None: the method's paper default); one that the method does not take is an error
    mix_prob: float | None = None  # switch probability, in [0, 1] (not baseline)
    mix_beta: float | None = None  # Beta(beta, beta) ratio parameter, > 0 (mixup, cutmix, as-cutmix, snapmix, ricap, fmix, manifold, automix)
    snapmix_semantics: str | None = None  # released (default) | improved (see dali_snapmix/mix/snapmix.py)
    cam_resolution: float | None = None  # SnapMix CAM pass on a copy downscaled by this factor, in (0, 1] (0.5: low-res mode)
    cam_cache_every: int | None = None  # SnapMix cached-CAM mode: exact CAMs refreshed every N epochs (0: off)
    mixed_example_variant: str | None = None  # the mixed-example family's variant (default vh-mixup; mix/mixed_example.py)
    mixed_example_semantics: str | None = None  # paper (default) | released (its mixed concat's swapped splits)
    saliencymix_semantics: str | None = None  # paper (default: a box per sample) | released (one saliency map and box per batch)
    guided_pairing: str | None = None  # GuidedMixup's partners: greedy (default: the paper's cycle) | random
    guided_saliency_bn: str | None = None  # Guided-AP's saliency pass: train (default, the release: BN statistics move) | eval
    attentive_k: int | None = None  # AttentiveMix: cells pasted from the partner (default 6)
    attentive_grid: int | None = None  # AttentiveMix: the grid's side in cells (default 7)
    attentive_model: str | None = None  # AttentiveMix's attention from this fixed network (a --model name; default: the CAMs of the model being trained)
    attentive_weights: str | None = None  # its local pretrained state dict (efficientnet_lite0_imagenet ships its own)
    comix_part: int | None = None  # Co-Mixup: images mixed together, consecutive in the batch (default 20, its release's)
    comix_block_num: int | None = None  # Co-Mixup: the grid's side (default 4; -1: drawn from 2, 4, 8, 16 each batch)
    automix_momentum: float | None = None  # AutoMix: the EMA teacher's first momentum, in [0, 0.99999] (default 0.999, its release's for runs of 74,800 steps; a cosine takes it to 0.99999)
    loss: str = "ce"  # ce: the mixed cross-entropy | bce: BCE on softmax (Manifold Mixup's, PuzzleMix's, Co-Mixup's, GuidedMixup's CIFAR code)
    clean_lam: float = 0.0  # weight of the clean batch's cross-entropy added to each mixed step (PuzzleMix, Co-Mixup, Guided-AP; x 2/C under --loss bce); > 0 puts PuzzleMix's and Co-Mixup's saliency pass in train mode, as their releases
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
    eval_every: int = run_only(1)  # evaluate every N epochs (and after the last)
    workers: int = run_only(2)  # DALI threads / DataLoader workers
    seed: int = 0  # every random stream derives from it (dali_snapmix/seeding.py: purpose, epoch, rank)
    out: str = run_only("runs/train")  # logs, checkpoints, plots and the resolved config go here
    resume: str = run_only("")  # checkpoint to continue from (written by this script)
    save_samples: bool = run_only(False)  # after training, write samples.png: one batch mixed with the trained model
    compare: str = run_only("")  # comma-separated methods: train each in turn, print one table
    mix_warmup: int = 0  # the first N epochs train unmixed, whatever the method (early CAMs come from an untrained head)
    mix_cycle: str = ""  # ON,OFF: after the warmup, mix ON epochs then train OFF epochs unmixed, in turn (SamplePairing's schedule)
    mix_cooldown: int = 0  # the last N epochs train unmixed (SamplePairing's final phase)
    keep_checkpoints: str = run_only("")  # comma-separated epochs whose checkpoint is also kept, as epoch<K>.pt
    label_fidelity: bool = run_only(False)  # after training, score the method's labels against the embedded set's part masks


# the embedded set the trainer uses without --data: 100 training images per class took the
# demo's baseline from 0.89 (60 per class) to 0.92 top-1 in 8 epochs (docs/results.md, make demo)
BIRDS = {"train_per_class": 100, "test_per_class": 30}

# a preset's method option applies to the methods that take it (scratch: mix_prob 0.5 for
# every method with a switch, the paper's Table 4; baseline has none)
PRESETS = {
    "paper": {},
    "scratch": {"mix_prob": 0.5, "epochs": 300, "lr": 0.01, "lr_steps": "150,225,270"},
    # fine-tunes the ImageNet Lite0 at 128 px crops (4x4 CAMs) on the embedded set (docs/results.md: make demo)
    "demo": {"model": "efficientnet_lite0_imagenet", "epochs": 8, "batch_size": 16, "lr": 0.04, "lr_pretrained": 0.008,
             "lr_steps": "6,7", "resize": 146, "crop": 128, "channels_last": True, "out": "runs/demo"},
}
CHOICES = {
    "preset": list(PRESETS), "data_loader": ["dali", "pytorch"], "device": ["auto", "gpu", "cpu"],
    "mix": list(METHODS), "snapmix_semantics": ["released", "improved"], "resize_mode": ["shorter", "warp"],
    "amp": ["off", "bf16", "fp16"], "mixed_example_variant": list(MIXED_EXAMPLE_VARIANTS),
    "mixed_example_semantics": ["paper", "released"], "saliencymix_semantics": ["paper", "released"],
    "guided_pairing": ["greedy", "random"], "guided_saliency_bn": ["train", "eval"], "loss": ["ce", "bce"],
}
# each method option: the constructor keyword it sets, and the methods that take it
OPTIONS = {
    "mix_prob": ("prob", [m for m in METHODS if m != "baseline"]),
    "mix_beta": ("beta", ["mixup", "cutmix", "as-cutmix", "snapmix", "ricap", "fmix", "manifold", "automix"]),
    "snapmix_semantics": ("semantics", ["snapmix"]),
    "cam_resolution": ("cam_resolution", ["snapmix"]),
    "cam_cache_every": ("cache", ["snapmix"]),  # a CAMCache refreshed every N epochs
    "mixed_example_variant": ("variant", ["mixed-example"]),
    "mixed_example_semantics": ("semantics", ["mixed-example"]),
    "saliencymix_semantics": ("semantics", ["saliencymix"]),
    "guided_pairing": ("pairing", ["guided-sr", "guided-ap"]),
    "guided_saliency_bn": ("saliency_bn", ["guided-ap"]),
    "attentive_k": ("k", ["attentivemix"]),
    "attentive_grid": ("grid", ["attentivemix"]),
    "attentive_model": ("attention_model", ["attentivemix"]),  # the trainer builds the network (models.attention_network)
    "attentive_weights": ("attention_weights", ["attentivemix"]),
    "comix_part": ("part", ["comixup"]),
    "comix_block_num": ("block_num", ["comixup"]),
    "automix_momentum": ("base_momentum", ["automix"]),
}
APPLIES = {k: fits for k, (_, fits) in OPTIONS.items()}
# the methods with a CAM pass, which takes the run's --amp and --channels-last
CAM_PASS = ["snapmix", "attentivemix"]
# the methods that take the run's input normalisation: SaliencyMix reads the images' 8-bit
# levels, AttentiveMix re-normalises them for its fixed attention network, PuzzleMix's
# image smoothness compares pixels
TAKES_NORMALISATION = ["saliencymix", "attentivemix", "puzzlemix"]
# the methods whose releases run the saliency pass in train mode when they keep a clean loss
# (--clean-lam > 0), in eval mode otherwise
SALIENCY_BN_FROM_CLEAN_LAM = ["puzzlemix", "comixup"]
TYPES = {"int": int, "float": float, "str": str}
FP16_ON_CPU = "--amp fp16 needs a GPU (fp16 training needs CUDA's gradient scaler); on the CPU use --amp bf16"
# settings a resumed run may change: they do not change what the run computes
RUN_ONLY = frozenset(f.name for f in dataclasses.fields(Config) if f.metadata.get("run_only"))


def parse_args(argv=None, *, description: str | None = None) -> Config:
    """A checked :class:`Config` from the command line (``argv``; None: ``sys.argv``);
    errors leave through SystemExit with the flag and its value."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    p = argparse.ArgumentParser(description=description or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def mix_cycle(cfg: Config) -> tuple[int, int] | None:
    """--mix-cycle as (on, off) epochs, or None."""
    if not cfg.mix_cycle:
        return None
    try:
        on, off = (int(v) for v in cfg.mix_cycle.split(","))
    except ValueError:
        raise SystemExit(f"--mix-cycle must be ON,OFF (two epoch counts), got {cfg.mix_cycle!r}") from None
    if on < 1 or off < 0:
        raise SystemExit(f"--mix-cycle must have ON >= 1 and OFF >= 0, got {cfg.mix_cycle!r}")
    return on, off


def mixing_on(cfg: Config, epoch: int) -> bool:
    """Whether epoch (0-based) mixes: not in the --mix-warmup epochs, nor the last
    --mix-cooldown, nor the OFF part of a --mix-cycle counted from the warmup's end."""
    if epoch < cfg.mix_warmup or epoch >= cfg.epochs - cfg.mix_cooldown:
        return False
    cycle = mix_cycle(cfg)
    return cycle is None or (epoch - cfg.mix_warmup) % sum(cycle) < cycle[0]


def check(cfg: Config) -> None:
    """Reject bad values before anything is built."""
    for name in ("epochs", "batch_size", "resize", "crop", "workers", "eval_every"):
        if getattr(cfg, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.mix_prob is not None and not 0.0 <= cfg.mix_prob <= 1.0:
        raise SystemExit(f"--mix-prob must be in [0, 1], got {cfg.mix_prob}")
    if cfg.mix_beta is not None and not cfg.mix_beta > 0:
        raise SystemExit(f"--mix-beta must be > 0, got {cfg.mix_beta}")
    if not cfg.clean_lam >= 0:
        raise SystemExit(f"--clean-lam must be >= 0, got {cfg.clean_lam}")
    if cfg.automix_momentum is not None and not 0.0 <= cfg.automix_momentum <= 0.99999:
        raise SystemExit(f"--automix-momentum must be in [0, 0.99999] (its cosine ends at 0.99999), got {cfg.automix_momentum}")
    if cfg.cam_resolution is not None and not 0.0 < cfg.cam_resolution <= 1.0:
        raise SystemExit(f"--cam-resolution must be in (0, 1], got {cfg.cam_resolution}")
    if cfg.cam_cache_every is not None and cfg.cam_cache_every < 0:
        raise SystemExit(f"--cam-cache-every must be >= 0 (0: off), got {cfg.cam_cache_every}")
    methods = cfg.compare.split(",") if cfg.compare else [cfg.mix]
    if cfg.clean_lam > 0 and all(m == "baseline" for m in methods):
        raise SystemExit(f"--clean-lam {cfg.clean_lam} adds the clean batch's loss to mixed steps, and --mix baseline "
                         f"has none: its steps are clean already")
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"--compare: unknown method {m!r}; choose from {list(METHODS)}")
    if cfg.clean_lam > 0 and "automix" in methods:
        raise SystemExit(f"--clean-lam {cfg.clean_lam} does not apply to --mix automix: its one-hot loss on the clean "
                         f"batch is part of the method (weight 1, its release's head_one_q)")
    for k, v in options_not_taken(cfg, methods).items():
        where = f"--compare {cfg.compare}" if cfg.compare else f"--mix {cfg.mix}"
        raise SystemExit(f"--{k.replace('_', '-')} {v} does not apply to {where}: it applies to {', '.join(APPLIES[k])}")
    if cfg.amp == "fp16" and cfg.device == "cpu":
        raise SystemExit(FP16_ON_CPU)
    if not 0 <= cfg.mix_warmup < cfg.epochs:
        raise SystemExit(f"--mix-warmup must be in [0, --epochs {cfg.epochs}), got {cfg.mix_warmup}")
    if not 0 <= cfg.mix_cooldown < cfg.epochs - cfg.mix_warmup:
        raise SystemExit(f"--mix-cooldown must be in [0, --epochs - --mix-warmup = {cfg.epochs - cfg.mix_warmup}), "
                         f"got {cfg.mix_cooldown}")
    mix_cycle(cfg)
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
    if cfg.attentive_weights and not Path(cfg.attentive_weights).is_file():
        raise SystemExit(f"--attentive-weights: no such file {cfg.attentive_weights}")
    if cfg.attentive_weights and not cfg.attentive_model:
        raise SystemExit(f"--attentive-weights {cfg.attentive_weights} needs --attentive-model (the network they are for)")
    if cfg.pretrained and not Path(cfg.pretrained).is_file():
        raise SystemExit(f"--pretrained: no such file {cfg.pretrained}")
    if cfg.resume and not Path(cfg.resume).is_file():
        raise SystemExit(f"--resume: no such file {cfg.resume}")




def options_not_taken(cfg: Config, methods: list[str]) -> dict:
    """The method options ``cfg`` sets that none of ``methods`` takes, with their values."""
    return {k: getattr(cfg, k) for k, fits in APPLIES.items() if getattr(cfg, k) is not None and not set(methods) & set(fits)}


def for_method(cfg: Config, method: str) -> Config:
    """``cfg`` for one method of a comparison: the method options it does not take unset
    (``check`` made sure each applies to some compared method)."""
    return dataclasses.replace(cfg, mix=method, compare="",
                               **{k: None for k, fits in APPLIES.items() if method not in fits})



