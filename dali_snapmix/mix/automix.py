"""AutoMix (Liu, Li, Wu et al., "AutoMix: Unveiling the Power of Mixup for Stronger
Classifiers", ECCV 2022): a small network, the Mix Block, learns where each mixed image
takes its pixels from, from the features of a momentum copy of the classifier.

The Mix Block (the release's ``PixelMixBlock``, Westlake-AI/openmixup
``openmixup/models/heads/pmix_block.py``, with its fine-grained configs' settings: CUB-200
``r18_l2_a2_near_lam_cat_mb_mlr5e_4_1xb16_ep200.py``), for features z (N, C, h, w) of a
batch, its partners z[perm] and a mixing ratio lam:

    z_a = [z, lam],  z_b = [z[perm], 1 - lam]          lam as an extra channel (``lam_concat``)
    q = W_q z_a,  k = W_q z_b                          one 1 x 1 conv for both (C + 1 -> C / 2)
    P = softmax_rows(q^T k / sqrt(C / 2))              (N, hw, hw) attention
    v = W_v z_b                                        a 1 x 1 conv to one channel
    m_b = sigmoid(U(P v))                              the partner's weight per pixel, U a nearest
                                                       upsampling by the feature map's stride
    x~ = (1 - m_b) x + m_b x[perm]

and its mask loss on the batch's mean: max(|1 - mean(m_b) - lam| - 0.1, 0) (L1, margin 0.1),
weighted 0.1 and annealed to 0 by a cosine in the CUB config. Both convs start from
N(0, 0.01) weights and zero biases, as the release initialises them.

The momentum pipeline's schedules, by iteration as the release's hooks: the teacher's
momentum held at 0.999 for the first 10 % of the iterations, then
0.99999 - (0.99999 - 0.999) (cos(pi k / K) + 1) / 2 (``CosineScheduleHook``, adjust scope
[0.1, 1], constant warm-up), applied to the parameters after each step (``ema_update``:
p_k <- m p_k + (1 - m) p_q; buffers are the teacher's own, as the release's); the mask
loss's weight 0.1 (cos(pi k / K) + 1) / 2 (``CustomCosineAnnealingHook`` to 0).

One step (the release's ``AutoMixup.forward_train`` with the CUB config: alpha 2,
``mask_layer`` 2, ``lam_margin`` 0.08, ``mix_shuffle_no_repeat``, every head weight 1):

    lam_mb, lam_bb ~ Beta(2, 2); perm_bb, perm_mb partners without self-pairs (10 redraws;
        perm_mb then a random shift)
    z = the teacher's stage-3 features of the clean batch (stride 16 on a ResNet)
    m_mb = MixBlock(z, lam_mb, perm_mb)                      trains phi
    m_bb = MixBlock(z, lam_bb, perm_bb), detached; a constant lam_bb (Mixup) where
        lam_bb <= 0.08 or >= 0.92
    L_phi = CE_mix(teacher(x~_mb), lam_mb) + w_mask mask_loss(m_mb, lam_mb)
                                     phi's gradients (the teacher's parameters are frozen)
    L_theta = CE_mix(student(x~_bb), lam_bb) + CE(student(x), y)
                                     the trainer's step (the one-hot term: ``clean_loss_weight``)
    after the step: the teacher <- EMA of the student

with CE_mix(logits, lam) = lam CE(y) + (1 - lam) CE(y[perm]): the labels are the sampled
lam, whatever the mask's mean. ``AutoMix.resolve`` runs the teacher and the Mix Block,
takes phi's SGD step when the method is training (:meth:`AutoMix.train`), and returns the
classifier's batch as :class:`~dali_snapmix.mix.params.MaskParams`, mixed by
``kernels.mask_blend``; the release's total loss has the same gradients, phi's and the
classifier's being disjoint (m_bb is detached, the teacher a copy).

What differs from the release, on purpose or where it is silent:
* The classifier has one head for both of its losses (the release keeps a one-hot and a
  mixup head over one backbone, and the teacher EMA copies of both): the trainer trains
  the models it builds, whose single classifier is what is evaluated.
* The classifier's optimiser is the run's shared recipe (the CUB config's is SGD lr 0.001
  with a cosine to 0, weight decay 5e-4); the Mix Block's is the release's own: SGD lr
  0.01, momentum 0.9, weight decay 5e-4, a cosine to 5e-4 by epoch.
* The teacher's passes run in float32 whatever the run's autocast (the release forces its
  mixup losses to float32); a batch of 1 mixes with itself and a batch of 2 shifts by 1
  where the release's shift, drawn from [1, n - 2], fails.
* Under torch.distributed each process mixes its own batch, the Mix Block's gradients are
  averaged over the processes (the release's DDP does this) and the teacher's BatchNorm
  statistics become rank 0's after every step (as the trainer's DDP keeps the
  classifier's; the release's does not broadcast buffers), so rank 0's checkpoint is every
  process's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..models import mid_layer, snapshot
from .base import check_beta, check_prob
from .masks import MaskMethod, mask_params
from .params import MaskParams, _check_perm, coin, permutation

__all__ = ["AutoMix", "AutoMixParams", "MixBlock", "ema_update", "mask_loss", "mask_loss_weight_at", "momentum_at",
           "no_repeat_permutation", "teacher_parts"]


class MixBlock(nn.Module):
    """The Mix Block on features of ``in_channels`` channels (see the module docstring):
    ``reduction`` divides the attention's width, ``lam_concat`` gives lam to the query, key
    and value as a channel (the fine-grained and ImageNet configs; the CIFAR ones do not),
    ``upsample`` "nearest" (AutoMix) or "bilinear" (the sigmoid after the upsampling, as the
    release)."""

    def __init__(self, in_channels: int, *, reduction: int = 2, lam_concat: bool = True, use_scale: bool = True,
                 upsample: str = "nearest") -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be a positive int, got {reduction!r}")
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        self.in_channels, self.lam_concat, self.use_scale, self.upsample = in_channels, bool(lam_concat), bool(use_scale), upsample
        self.inter_channels = max(in_channels // reduction, 1)
        width = in_channels + 1 if self.lam_concat else in_channels
        self.query = nn.Conv2d(width, self.inter_channels, 1)
        self.value = nn.Conv2d(width, 1, 1)
        for conv in (self.query, self.value):  # the release's init: normal(0, 0.01), bias 0
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: torch.Tensor, lam: float, perm: torch.Tensor, *, scale_factor: int) -> torch.Tensor:
        """The partner's weight m_b, float32 (N, 1, h * scale_factor, w * scale_factor), in
        (0, 1): features (N, C, h, w), lam the own image's share, perm int64 (N,)."""
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f"features must be (N, {self.in_channels}, h, w), got {tuple(features.shape)}")
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam!r}")
        n, _, h, w = features.shape
        z_a, z_b = features, features[perm.to(features.device)]
        if self.lam_concat:
            block = torch.full((n, 1, h, w), float(lam), dtype=features.dtype, device=features.device)
            z_a, z_b = torch.cat([z_a, block], 1), torch.cat([z_b, 1 - block], 1)
        v = self.value(z_b).flatten(2).transpose(1, 2)  # (N, hw, 1)
        q = self.query(z_a).flatten(2).transpose(1, 2)  # (N, hw, C')
        k = self.query(z_b).flatten(2)  # (N, C', hw): the release's key is the query conv
        att = torch.matmul(q.float(), k.float())  # float32 as the release forces it (fp16 overflows)
        if self.use_scale:
            att = att / self.inter_channels ** 0.5
        m = torch.matmul(att.softmax(-1), v.float()).view(n, 1, h, w)
        m = F.interpolate(m, scale_factor=scale_factor, mode=self.upsample)
        return torch.sigmoid(m)


def mask_loss(mask_b: torch.Tensor, lam: float, *, margin: float = 0.1) -> torch.Tensor:
    """The release's L1 mask loss on the batch's mean: max(|1 - mean(m_b) - lam| - margin, 0)
    for the partner's weights ``mask_b`` (N, 1, H, W) and the own share lam (scalar tensor)."""
    return torch.clamp((1 - mask_b.mean() - lam).abs() - margin, min=0.0)


def _check_step(step: int, total: int) -> None:
    if not isinstance(total, int) or total < 1 or not isinstance(step, int) or not 0 <= step <= total:
        raise ValueError(f"step must be an int in [0, total], total a positive int; got step={step!r}, total={total!r}")


def momentum_at(step: int, total: int, *, base: float = 0.999, end: float = 0.99999,
                scope: tuple[float, float] = (0.1, 1.0)) -> float:
    """The teacher's momentum before iteration ``step`` of ``total`` (the release's
    ``CosineScheduleHook`` with a constant warm-up): ``base`` until ``scope[0]`` of the run,
    then ``end - (end - base) (cos(pi step / K) + 1) / 2`` up to K = ``scope[1]`` of it
    (the cosine runs over the whole of [0, K], so it starts a little above ``base``)."""
    _check_step(step, total)
    if not 0.0 <= base <= end <= 1.0:
        raise ValueError(f"momenta must satisfy 0 <= base <= end <= 1, got base={base!r}, end={end!r}")
    lo = int(total * scope[0]) if scope[0] > 0 else 0
    hi = int(total * scope[1]) if scope[1] < 1 else total
    if step < lo:
        return float(base)
    if step > hi:  # past the scope the hook leaves the last value
        step = hi
    return float(end - (end - base) * (math.cos(math.pi * step / hi) + 1) / 2)


def mask_loss_weight_at(step: int, total: int, *, base: float = 0.1, end: float = 0.0) -> float:
    """The mask loss's weight at iteration ``step`` of ``total``: ``base`` annealed to
    ``end`` by a cosine (the release's ``CustomCosineAnnealingHook``, by iteration)."""
    _check_step(step, total)
    return float(end + 0.5 * (base - end) * (math.cos(math.pi * step / total) + 1))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """p_teacher <- momentum p_teacher + (1 - momentum) p_student for every parameter (the
    release's ``momentum_update``; buffers such as BatchNorm's statistics stay the
    teacher's own, updated by its own forwards)."""
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    t, s = dict(teacher.named_parameters()), dict(student.named_parameters())
    if t.keys() != s.keys() or any(t[k].shape != s[k].shape for k in t):
        bad = sorted(t.keys() ^ s.keys()) or [k for k in t if t[k].shape != s[k].shape]
        raise ValueError(f"teacher and student must have the same parameters; they differ at {bad[:3]}")
    for k, p in t.items():
        p.mul_(momentum).add_(s[k].detach(), alpha=1.0 - momentum)


def teacher_parts(model: nn.Module, *, teacher: nn.Module | None = None) -> dict:
    """AutoMix's ``teacher``, ``layer`` and ``channels`` for a classifier ``model``: the
    teacher ``copy.deepcopy(model)``, or ``teacher`` (a new instance of the same
    architecture) given ``model``'s weights, which a model carrying other objects' forward
    hooks (--midlevel's branch) needs, or the copy would carry them too; the Mix Block on
    its stride-16 stage (:func:`dali_snapmix.models.mid_layer`; ValueError for others)."""
    import copy

    if teacher is None:
        teacher = copy.deepcopy(model)
    else:
        teacher.load_state_dict(model.state_dict())
    layer, channels, _ = mid_layer(teacher)
    return dict(teacher=teacher, layer=layer, channels=channels)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def no_repeat_permutation(rng: np.random.Generator, n: int, *, shift_on_failure: bool) -> torch.Tensor:
    """The release's ``_no_repeat_shuffle_idx``: a permutation redrawn up to 10 times while
    it has a self-pair; then, with ``shift_on_failure``, i -> (i + s) mod n for s drawn from
    [1, n - 2] (n = 2: s = 1; n = 1: the identity), else the last draw as it is."""
    p = permutation(rng, n)
    repeat = False
    for _ in range(10):
        if bool((p == torch.arange(n)).any()):
            repeat = True
            p = permutation(rng, n)
        else:
            repeat = False
            break
    if repeat and shift_on_failure and n > 1:
        s = int(rng.integers(1, n - 1)) if n > 2 else 1
        p = (torch.arange(n) + s) % n
    return p


@dataclass(frozen=True)
class AutoMixParams:
    """AutoMix before its Mix Block: ``mix`` (the coin), the Mix Block's training pair
    (``perm_mb``, ``lam_mb``) and the classifier's (``perm_bb``, ``lam_bb``); each lam is
    the own image's share, each perm int64 (N,)."""

    mix: bool
    perm_mb: torch.Tensor
    lam_mb: float
    perm_bb: torch.Tensor
    lam_bb: float

    def check(self, *, n: int, height: int, width: int) -> None:
        _check_perm(self.perm_mb, n)
        _check_perm(self.perm_bb, n)
        for name in ("lam_mb", "lam_bb"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:  # NaN fails too
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")


class AutoMix(MaskMethod):
    """AutoMix (see the module docstring) around a ``teacher``: a copy of the classifier
    being trained (same parameter names), which this method owns, freezes and moves by
    EMA in :meth:`after_step`; the Mix Block reads the output of the teacher's module
    ``layer`` (``channels`` channels; the trainer's: a ResNet's ``layer3``, the stride-16
    stage of others, :func:`dali_snapmix.models.mid_layer`). ``epochs`` x
    ``steps_per_epoch`` iterations set the schedules. A new method is training
    (:meth:`train`): each ``resolve`` then also takes the Mix Block's SGD step. The other
    keywords are the release's CUB settings: ``beta`` (alpha), ``lam_margin``, the mask
    loss's ``mask_loss_weight`` (annealed to 0) and ``mask_margin``, the teacher's momentum
    from ``base_momentum`` to ``end_momentum``, the Mix Block's SGD (``block_lr`` annealed
    to ``block_lr_min`` by epoch, ``block_momentum``, ``block_weight_decay``);
    ``channels_last`` feeds the teacher channels_last input (the trainer's --channels-last)."""

    name = "automix"
    params_type = AutoMixParams
    clean_loss_weight = 1.0  # the release's one-hot head (head_one_q, weight 1) on the clean batch
    learned = True

    def __init__(self, *, teacher: nn.Module, layer: nn.Module, channels: int, epochs: int, steps_per_epoch: int,
                 num_classes: int | None = None, beta: float = 2.0, prob: float = 1.0, lam_margin: float = 0.08,
                 mask_loss_weight: float = 0.1, mask_margin: float = 0.1, base_momentum: float = 0.999,
                 end_momentum: float = 0.99999, block_lr: float = 0.01, block_lr_min: float = 5e-4,
                 block_momentum: float = 0.9, block_weight_decay: float = 5e-4, channels_last: bool | None = None,
                 seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.beta, self.prob = check_beta(beta), check_prob(prob)
        if not isinstance(layer, nn.Module) or not any(m is layer for m in teacher.modules()):
            raise ValueError(f"layer must be a module of the teacher, got {type(layer).__name__}")
        for name, v in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not 0.0 <= lam_margin < 0.5:
            raise ValueError(f"lam_margin must be in [0, 0.5), got {lam_margin!r}")
        if not mask_loss_weight >= 0 or not mask_margin >= 0:
            raise ValueError(f"mask_loss_weight and mask_margin must be >= 0, got {mask_loss_weight!r}, {mask_margin!r}")
        if not 0.0 <= block_lr_min <= block_lr:
            raise ValueError(f"block_lr_min must be in [0, block_lr = {block_lr!r}], got {block_lr_min!r}")
        momentum_at(0, 1, base=base_momentum, end=end_momentum)  # checks them
        self.teacher = teacher.requires_grad_(False)
        self.teacher.train()  # the release's teacher sees its batches in train mode (its own BN statistics)
        self.epochs, self.total_steps = epochs, epochs * steps_per_epoch
        self.lam_margin, self.mask_loss_weight, self.mask_margin = float(lam_margin), float(mask_loss_weight), float(mask_margin)
        self.base_momentum, self.end_momentum = float(base_momentum), float(end_momentum)
        self.block_lr, self.block_lr_min = float(block_lr), float(block_lr_min)
        self.channels_last = bool(channels_last)
        device = next(teacher.parameters()).device
        self.block = MixBlock(channels).to(device)
        self.optimizer = torch.optim.SGD(self.block.parameters(), lr=block_lr, momentum=block_momentum,
                                         weight_decay=block_weight_decay)
        self.step = 0  # iterations done: the schedules' clock
        self.training = True
        self.last_losses: dict[str, torch.Tensor] = {}
        self._features: torch.Tensor | None = None
        layer.register_forward_hook(self._keep)

    @classmethod
    def following(cls, model: nn.Module, *, epochs: int, steps_per_epoch: int, teacher: nn.Module | None = None,
                  **options) -> AutoMix:
        """AutoMix following ``model`` (a ResNet, timm EfficientNet or small_cnn): its
        teacher and Mix Block's stage from :func:`teacher_parts`."""
        return cls(**teacher_parts(model, teacher=teacher), epochs=epochs, steps_per_epoch=steps_per_epoch, **options)

    def _keep(self, module, inputs, output) -> None:
        self._features = output

    @property
    def resolved_type(self) -> type:
        return MaskParams

    def train(self, mode: bool = True) -> AutoMix:
        """Training: ``resolve`` takes the Mix Block's step and the teacher's BatchNorm
        statistics move; else (sample grids, label fidelity) neither changes."""
        self.training = bool(mode)
        return self

    def eval(self) -> AutoMix:
        return self.train(False)

    def set_epoch(self, epoch: int) -> None:
        """The Mix Block's learning rate for ``epoch``: block_lr annealed to block_lr_min by a cosine."""
        super().set_epoch(epoch)
        lr = self.block_lr_min + (self.block_lr - self.block_lr_min) * (math.cos(math.pi * epoch / self.epochs) + 1) / 2
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> AutoMixParams:
        n = images.shape[0]
        mix = coin(rng, self.prob)
        lam_mb, lam_bb = (float(v) for v in rng.beta(self.beta, self.beta, size=2))  # the release's order: mb, bb
        perm_bb = no_repeat_permutation(rng, n, shift_on_failure=False)
        perm_mb = no_repeat_permutation(rng, n, shift_on_failure=True)
        return AutoMixParams(mix=mix, perm_mb=perm_mb, lam_mb=lam_mb, perm_bb=perm_bb, lam_bb=lam_bb)

    def teacher_features(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's ``layer`` output for a batch, without gradients (the teacher's
        forward runs whole, as the release's backbone does)."""
        x = images.float()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self._features = None
        with torch.no_grad():
            self.teacher(x)
        if self._features is None:
            raise RuntimeError("AutoMix: the teacher's layer did not run in its forward (is it the teacher's own module?)")
        feats, self._features = self._features, None
        return feats

    def scale_factor(self, images: torch.Tensor, features: torch.Tensor) -> int:
        h, w = images.shape[2:]
        fh, fw = features.shape[2:]
        if h % fh or w % fw or h // fh != w // fw:
            raise ValueError(f"AutoMix upsamples the {fh} x {fw} features by one integer factor, which "
                             f"{h} x {w} images do not allow")
        return h // fh

    def resolve(self, images: torch.Tensor, labels: torch.Tensor, params, *, model=None) -> MaskParams:
        """AutoMixParams' classifier mask (and, training, the Mix Block's step); MaskParams as given."""
        if not isinstance(params, AutoMixParams):
            return params
        n, _, h, w = images.shape
        if not params.mix:
            return MaskParams(mix=False, perm=torch.arange(n), masks=torch.zeros(n, h, w), w_a=torch.ones(n))
        restore = None if self.training else snapshot(self.teacher)
        feats = self.teacher_features(images)
        s = self.scale_factor(images, feats)
        with torch.no_grad():  # before phi's step: the release computes both masks in one forward
            m_bb = self.block(feats, params.lam_bb, params.perm_bb, scale_factor=s)
        if self.training:
            self.learn(images, labels, feats, params, scale_factor=s)
        else:
            restore()
        lam = params.lam_bb
        w_a = torch.full((n,), lam, dtype=torch.float32)
        if lam <= self.lam_margin or lam >= 1 - self.lam_margin:  # the release's fallback: plain Mixup
            return mask_params(mix=True, perm=params.perm_bb, masks=torch.full((1, h, w), lam, device=images.device), w_a=w_a[:1])
        return MaskParams(mix=True, perm=params.perm_bb, masks=(1 - m_bb[:, 0]).contiguous(), w_a=w_a)

    def learn(self, images: torch.Tensor, labels: torch.Tensor, features: torch.Tensor, params: AutoMixParams, *,
              scale_factor: int) -> None:
        """The Mix Block's step: the teacher's mixed cross-entropy on the batch mixed by
        m_mb, plus the annealed mask loss; ``last_losses`` keeps both (detached)."""
        lam, perm = params.lam_mb, params.perm_mb.to(images.device)
        m = self.block(features, lam, perm, scale_factor=scale_factor)
        x = images.detach().float()
        mixed = x * (1 - m) + x[perm] * m
        if self.channels_last:
            mixed = mixed.contiguous(memory_format=torch.channels_last)
        out = self.teacher(mixed)
        self._features = None  # the hook kept this pass's map too: not needed
        logits = (out.logits if hasattr(out, "logits") else out).float()
        y = labels.to(images.device, torch.int64)
        mix_k = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
        weight = mask_loss_weight_at(min(self.step, self.total_steps), self.total_steps, base=self.mask_loss_weight)
        mask = weight * mask_loss(m, lam, margin=self.mask_margin)
        self.optimizer.zero_grad(set_to_none=True)
        (mix_k + mask).backward()
        if _distributed():  # the Mix Block's gradients averaged over the processes, as the release's DDP does
            for p in self.block.parameters():
                dist.all_reduce(p.grad)
                p.grad.div_(dist.get_world_size())
        self.optimizer.step()
        self.last_losses = {"mix_k": mix_k.detach(), "mask": mask.detach()}

    def after_step(self, model: nn.Module) -> None:
        """After the classifier's step: the teacher <- EMA of ``model`` at this
        iteration's momentum; the schedules' clock advances."""
        m = momentum_at(min(self.step, self.total_steps), self.total_steps, base=self.base_momentum, end=self.end_momentum)
        ema_update(self.teacher, model, m)
        if _distributed():  # every process's teacher statistics become rank 0's, as DDP's broadcast_buffers
            for b in self.teacher.buffers():  # keeps the classifier's (and as rank 0's checkpoint holds them)
                dist.broadcast(b, 0)
        self.step += 1

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "block": self.block.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        keys = {"teacher", "block", "optimizer", "step"}
        if set(state) != keys:
            raise ValueError(f"AutoMix's state has keys {sorted(keys)}, got {sorted(state)}")
        self.teacher.load_state_dict(state["teacher"])
        self.block.load_state_dict(state["block"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
