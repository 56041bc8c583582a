"""The label contract every mixing method returns, its loss, and the shared plumbing.

A mixed batch carries, per sample, K labels and K weights: ``labels`` int64 (N, K) and
``weights`` float32 (N, K). K is 2 for every pairwise method, where the columns are
(y_a, y_b) and (w_a, w_b) and stay readable under those names; RICAP mixes four images
(K = 4). The loss is mean_i sum_k CE(logits_i, labels[i, k]) * weights[i, k]; the
weights need not sum to 1 (SnapMix's do not).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "MixMethod", "MixedBatch", "mixed_bce_on_softmax", "mixed_cross_entropy", "soft_targets"]


class MixedBatch:
    """images: the mixed NCHW batch (the input tensor, modified in place); ``labels``
    int64 (N, K) and ``weights`` float32 (N, K) on the images' device.

    Built from K = 2 columns as ``MixedBatch(images, y_a, y_b, w_a, w_b)`` (each (N,)),
    or from any K as ``MixedBatch(images, labels=, weights=)``. For K = 2, ``y_a``,
    ``y_b``, ``w_a``, ``w_b`` read the columns (views: writing to them writes the
    batch's labels and weights)."""

    __slots__ = ("images", "labels", "weights")

    def __init__(self, images: torch.Tensor, y_a: torch.Tensor | None = None, y_b: torch.Tensor | None = None,
                 w_a: torch.Tensor | None = None, w_b: torch.Tensor | None = None, *,
                 labels: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> None:
        pair = (y_a, y_b, w_a, w_b)
        if labels is None and weights is None:
            if any(t is None for t in pair):
                raise ValueError("MixedBatch needs y_a, y_b, w_a, w_b (K = 2) or labels= and weights= (any K)")
            labels, weights = torch.stack([y_a, y_b], 1), torch.stack([w_a, w_b], 1)
        elif any(t is not None for t in pair) or labels is None or weights is None:
            raise ValueError("MixedBatch takes either y_a, y_b, w_a, w_b or labels= and weights=, not a mix of both")
        if labels.dim() != 2 or tuple(weights.shape) != tuple(labels.shape):
            raise ValueError(f"labels and weights must both be (N, K), got {tuple(labels.shape)} and "
                             f"{tuple(weights.shape)}")
        if labels.shape[0] != images.shape[0] or labels.shape[1] < 1:
            raise ValueError(f"labels must be (N, K) with N = {images.shape[0]} images and K >= 1, got "
                             f"{tuple(labels.shape)}")
        self.images, self.labels, self.weights = images, labels, weights

    @classmethod
    def with_partner(cls, images: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor, *,
                     w_a: torch.Tensor | None = None, w_b: torch.Tensor | None = None) -> MixedBatch:
        """K = 2 from a partner and one of the two weights (float32 (N,), on any device):
        labels (y, y[perm]), weights (w_a, 1 - w_a) or (1 - w_b, w_b), on the images' device."""
        if (w_a is None) == (w_b is None):
            raise ValueError("with_partner takes one of w_a= and w_b=")
        dev = images.device
        y = labels.to(dev, torch.int64)
        y_b = y[perm.to(dev)]
        if w_b is None:
            w_a = w_a.to(dev)
            return cls(images, y, y_b, w_a, 1.0 - w_a)
        w_b = w_b.to(dev)
        return cls(images, y, y_b, 1.0 - w_b, w_b)

    @property
    def k(self) -> int:
        """Labels per sample."""
        return self.labels.shape[1]

    def _column(self, name: str, t: torch.Tensor, j: int) -> torch.Tensor:
        if self.k != 2:
            raise AttributeError(f"{name} is a column of a K = 2 batch; this one has K = {self.k}: read labels / weights")
        return t[:, j]

    y_a = property(lambda self: self._column("y_a", self.labels, 0), doc="labels[:, 0] (K = 2)")
    y_b = property(lambda self: self._column("y_b", self.labels, 1), doc="labels[:, 1] (K = 2)")
    w_a = property(lambda self: self._column("w_a", self.weights, 0), doc="weights[:, 0] (K = 2)")
    w_b = property(lambda self: self._column("w_b", self.weights, 1), doc="weights[:, 1] (K = 2)")

    def __repr__(self) -> str:
        return f"MixedBatch(images={tuple(self.images.shape)}, K={self.k})"


def mixed_cross_entropy(logits: torch.Tensor, target: MixedBatch) -> torch.Tensor:
    """mean over the batch of sum_k CE(logits, labels[:, k]) * weights[:, k].

    One cross-entropy per label column, added in column order: for K = 2 exactly the
    operations of CE(y_a) w_a + CE(y_b) w_b, so training is bit for bit what it was before
    the K-label contract (a single log-softmax gathered at the K labels sums the
    same-label gradients in another order, which moved the demo recipe's SnapMix run from 0.842 to 0.864 best top-1)."""
    loss = None
    for k in range(target.k):
        term = F.cross_entropy(logits, target.labels[:, k], reduction="none") * target.weights[:, k]
        loss = term if loss is None else loss + term
    return loss.mean()


def mixed_bce_on_softmax(logits: torch.Tensor, target: MixedBatch) -> torch.Tensor:
    """``nn.BCELoss()(softmax(logits), t)``: per-class binary cross-entropy of the softmax
    probabilities against the dense targets t = :func:`soft_targets` (no smoothing), the
    mean over N x C, as Manifold Mixup's, PuzzleMix's, Co-Mixup's and GuidedMixup's CIFAR
    code trains (their ``bce_loss(softmax(output), reweighted_target)``; log clamped at
    -100 as BCELoss). Its gradients are about 2 / C of the cross-entropy's."""
    dense = soft_targets(target, num_classes=logits.shape[1])
    return F.binary_cross_entropy(torch.softmax(logits, dim=1), dense.to(logits.dtype))


LOSSES = {"ce": mixed_cross_entropy, "bce": mixed_bce_on_softmax}


def soft_targets(target: MixedBatch, *, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Dense (N, num_classes) targets sum_k weights[:, k] * t(labels[:, k]), t = one-hot
    smoothed as timm does ((1 - s) * one_hot + s / C), for soft-target losses."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    w = target.weights.float()
    dense = torch.zeros(len(w), num_classes, dtype=w.dtype, device=w.device).scatter_add_(1, target.labels, w)
    return dense * (1.0 - smoothing) + w.sum(1, keepdim=True) * (smoothing / num_classes)


def check_prob(prob: float) -> float:
    if not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob!r}")
    return float(prob)


def check_beta(beta: float) -> float:
    if not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    return float(beta)


class MixMethod:
    """Sample, then apply. ``sample`` draws every random choice from the generator it is
    given (else the method's own ``self.rng``, seeded from ``seed``) into a frozen params
    object; ``apply`` is deterministic; ``__call__`` samples only when no params are given.
    A subclass writes ``_sample(images, labels, rng)`` and ``_apply``."""

    name = "?"
    params_type: type = object  # what ``sample`` returns and ``apply`` accepts
    # True where a same-label pair's one class weight stands in both w_a and w_b (SnapMix);
    # else that class's weight is w_a + w_b
    merges_same_label = False
    # the weight of a clean batch's cross-entropy the method adds to each mixed step
    # (AutoMix's one-hot loss); the trainer adds it as --clean-lam's
    clean_loss_weight = 0.0
    # True where the masks come from state the run trains (AutoMix's Mix Block and teacher):
    # after training, the run's own mixer (not a new one) mixes the sample grid and the
    # label-fidelity batches, with train(False)
    learned = False

    def __init__(self, *, num_classes: int | None = None, seed: int | None = None) -> None:
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.rng = np.random.default_rng(seed)
        self.epoch = 0

    def sample(self, images: torch.Tensor, labels: torch.Tensor, *, rng: np.random.Generator | None = None) -> Any:
        """This batch's params, every random choice drawn from ``rng`` (default: ``self.rng``)."""
        return self._sample(images, labels, self.rng if rng is None else rng)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def _apply(self, images: torch.Tensor, labels: torch.Tensor, params: Any, *, model=None, backend: str = "auto",
               geometry=None) -> MixedBatch:
        """The method itself, on checked inputs and params."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: Any, *, model=None, backend: str = "auto",
              geometry=None) -> MixedBatch:
        """Mix with ``params`` (deterministic), after checking the batch and that the
        params fit it. ``geometry``: the loader's Batch (``indices``, ``window``,
        ``flip``); only SnapMix's CAM cache reads it."""
        self.check(images, labels)
        self.check_params(params, images)
        return self._apply(images, labels, params, model=model, backend=backend, geometry=geometry)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *, model=None, params: Any = None,
                 backend: str = "auto", geometry=None) -> MixedBatch:
        self.check(images, labels)
        if params is None:
            params = self.sample(images, labels)
        else:
            self.check_params(params, images)
        return self._apply(images, labels, params, model=model, backend=backend, geometry=geometry)

    @property
    def resolved_type(self) -> type:
        """What :meth:`resolve` returns: ``params_type`` unless the method's params need the model."""
        return self.params_type

    def resolve(self, images: torch.Tensor, labels: torch.Tensor, params: Any, *, model=None) -> Any:
        """The params ``apply`` finally mixes with: ``params`` itself, except for a method
        whose masks need the model (Guided-AP), which derives them here; the trainer's sample
        grid and the label-fidelity truth read what this returns."""
        return params

    def after_step(self, model) -> None:
        """The trainer calls this after each optimiser step of ``model`` (the classifier):
        nothing, except for a method that follows the model (AutoMix's EMA teacher)."""

    def set_epoch(self, epoch: int) -> None:
        """The trainer calls this each epoch (SnapMix's CAM cache stamps maps with it)."""
        self.epoch = int(epoch)

    def check(self, images, labels) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                f"images must be an NCHW float tensor, got {getattr(images, 'dtype', type(images).__name__)} "
                f"of shape {tuple(getattr(images, 'shape', ()))}"
            )
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"labels must be an int64 (or int32) tensor of shape (N,), got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} of shape {tuple(getattr(labels, 'shape', ()))}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if labels.numel():
            lo, hi = int(labels.min()), int(labels.max())
            top = self.num_classes
            if lo < 0 or (top is not None and hi >= top):
                raise ValueError(f"labels must be in [0, {top if top is not None else 'num_classes'}), got min {lo}, max {hi}")

    def check_params(self, params, images: torch.Tensor) -> None:
        """``apply`` calls this: replayed params must be this method's kind (its params, or
        its resolved params, which skip the model pass) and fit the batch."""
        kinds = (self.params_type, self.resolved_type)
        if not isinstance(params, kinds):
            names = " or ".join(dict.fromkeys(k.__name__ for k in kinds))
            raise ValueError(f"{type(self).__name__} takes {names}, got {type(params).__name__}")
        if hasattr(params, "check"):
            n, _, h, w = images.shape
            params.check(n=n, height=h, width=w)

    def state_dict(self) -> dict:
        """What a checkpoint must keep beyond the generator (reseeded each epoch): nothing
        for a stateless method."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")

    @staticmethod
    def unmixed(images: torch.Tensor, labels: torch.Tensor, y_b: torch.Tensor | None = None) -> MixedBatch:
        y = labels.to(images.device, torch.int64)
        ones = torch.ones(len(y), dtype=torch.float32, device=images.device)
        return MixedBatch(images, y, y if y_b is None else y_b.to(images.device), ones, torch.zeros_like(ones))
