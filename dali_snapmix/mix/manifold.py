"""Manifold Mixup (Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz, Bengio, "Manifold
Mixup: Better Representations by Interpolating Hidden States", ICML 2019, Sec. 2, Eq. 1):
mixup of the hidden states at a layer k drawn from an eligible set S,

    k ~ U(S),   lam ~ Beta(alpha, alpha),   h~_k = lam g_k(x_a) + (1 - lam) g_k(x_b),
    loss = lam CE(f_k(h~_k), y_a) + (1 - lam) CE(f_k(h~_k), y_b)

with S = {the input, the output of block group 1, the output of block group 2} (the paper's
PreActResNets; its release draws ``random.randint(0, 2)``). Defaults as the release's
manifold-mixup commands: alpha 2 (``beta=2.0`` here, the name the other methods give
Beta's parameter), one layer, one lam and one random permutation (self-pairs allowed) per
batch, every batch mixed (prob 1.0).

The mixing cannot be done on the input tensor alone: ``apply`` mixes the images (k = 0,
input mixup, through the blend kernel) or returns them untouched with a
:class:`HiddenMix` on the batch, a forward hook that :func:`hidden_mixing` puts on the
chosen module for one forward of the model:

    target = mix(images, labels, model=backbone)
    with hidden_mixing(target):
        logits = model(target.images)

The hidden layers of S, per architecture (:func:`manifold_layers`):
  torchvision ResNets   ``layer1``, ``layer2`` (its block groups 1 and 2)
  timm models           the first two stages its ``feature_info`` lists after the stem (reduction
                        4 and 8): ``layer1``, ``layer2`` for timm's ResNets; ``blocks.1``,
                        ``blocks.2`` for EfficientNet and EfficientNet-Lite0
  small_cnn             ``features.0``, ``features.1`` (its first two stages)
Other models (DenseNet, Inception) have no stated groups: name modules with ``layers=``.

The release trains with BCE on softmax outputs (its CIFAR code); the loss here is the
package's mixed cross-entropy, as for every method.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .. import kernels
from .base import MixedBatch, MixMethod, check_beta, check_prob
from .params import _check_perm, coin, permutation

__all__ = ["HiddenMix", "ManifoldMixup", "ManifoldParams", "hidden_mixing", "manifold_layers"]

INPUT = ""  # the input "layer" of S


@dataclass(frozen=True)
class ManifoldParams:
    """``mix`` (the switch coin), ``perm`` int64 (N,), ``lam`` (the batch's ratio) and
    ``layer``: an index into the method's layers, 0 the input."""

    mix: bool
    perm: torch.Tensor
    lam: float
    layer: int

    def check(self, *, n: int, height: int, width: int) -> None:
        _check_perm(self.perm, n)
        if not 0.0 <= self.lam <= 1.0:  # NaN fails too
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")


@dataclass(frozen=True)
class HiddenMix:
    """What the next forward must do: replace ``module``'s output h by lam h + (1 - lam) h[perm]."""

    module: nn.Module
    name: str
    perm: torch.Tensor  # on the images' device
    lam: float


class HiddenMixedBatch(MixedBatch):
    """A MixedBatch (the labels) whose images are mixed inside the model, by ``hidden``."""

    __slots__ = ("hidden",)

    def __init__(self, images, y_a, y_b, w_a, w_b, *, hidden: HiddenMix) -> None:
        super().__init__(images, y_a, y_b, w_a, w_b)
        self.hidden = hidden


@contextlib.contextmanager
def hidden_mixing(target: MixedBatch):
    """Around the forward of a mixed batch: for Manifold Mixup's hidden layers, the hook
    that mixes the module's output (exactly once: a module that runs twice, or not at all,
    in that forward is an error); for every other batch, nothing."""
    hidden = getattr(target, "hidden", None)
    if hidden is None:
        yield
        return
    fired = []

    def hook(module, inputs, output):
        if fired:
            raise RuntimeError(f"manifold mixup's layer {hidden.name!r} ran twice in one forward: choose a module the "
                               "model calls once")
        fired.append(True)
        return hidden.lam * output + (1.0 - hidden.lam) * output[hidden.perm]

    handle = hidden.module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
    if not fired:
        raise RuntimeError(f"manifold mixup's layer {hidden.name!r} did not run in the forward: is it a module of "
                           "this model?")


def manifold_layers(model: nn.Module) -> tuple[str, str]:
    """The paper's two hidden layers of S for ``model`` (module names; see the module docstring)."""
    import torchvision

    from ..models import SmallCNN

    if isinstance(model, torchvision.models.ResNet):
        return ("layer1", "layer2")
    if isinstance(model, SmallCNN):
        return ("features.0", "features.1")
    info = getattr(model, "feature_info", None)  # timm
    if info is not None:
        by = {f["reduction"]: f["module"] for f in info}  # the last stage at each reduction
        if 4 in by and 8 in by:
            return (by[4], by[8])
        raise ValueError(f"timm model {type(model).__name__} lists no stages at reductions 4 and 8 (only at "
                         f"{sorted(by)}): name manifold mixup's layers with layers=")
    raise ValueError(f"manifold mixup's layers are defined for torchvision ResNets, timm models and small_cnn, not "
                     f"{type(model).__name__}: name them with layers=")


class ManifoldMixup(MixMethod):
    params_type = ManifoldParams
    name = "manifold"

    def __init__(self, *, prob: float = 1.0, beta: float = 2.0, layers: tuple[str, ...] | None = None,
                 num_classes: int | None = None, seed: int | None = None) -> None:
        """``layers``: the hidden modules of S by name (with "" for the input); default the
        input and :func:`manifold_layers` of the model."""
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob, self.beta = check_prob(prob), check_beta(beta)
        if layers is not None:
            layers = tuple(layers)
            if not layers or not all(isinstance(s, str) for s in layers) or len(set(layers)) != len(layers):
                raise ValueError(f"layers must be distinct module names ('' for the input), got {layers!r}")
        self.layers = layers

    def _count(self) -> int:
        return 3 if self.layers is None else len(self.layers)

    def layer_names(self, model: nn.Module | None) -> tuple[str, ...]:
        """S for ``model``: the names of its layers, "" for the input."""
        if self.layers is not None:
            return self.layers
        if model is None:
            raise ValueError("manifold mixup mixes inside the model: apply it with model=")
        return (INPUT, *manifold_layers(model))

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> ManifoldParams:
        """Draw, in this order: the switch coin, the layer, lam, the partners."""
        mix = coin(rng, self.prob)
        layer = int(rng.integers(0, self._count()))
        lam = float(rng.beta(self.beta, self.beta))
        return ManifoldParams(mix=mix, perm=permutation(rng, images.shape[0]), lam=lam, layer=layer)

    def check_params(self, params, images: torch.Tensor) -> None:
        super().check_params(params, images)
        if not 0 <= params.layer < self._count():
            raise ValueError(f"layer must index this method's {self._count()} layers, got {params.layer}")

    def _apply(self, images, labels, params: ManifoldParams, *, model=None, backend: str = "auto",
               geometry=None) -> MixedBatch:
        if not params.mix:
            return self.unmixed(images, labels)
        n = images.shape[0]
        lam = torch.full((n,), params.lam, dtype=torch.float32)
        name = self.layer_names(model)[params.layer]
        if name == INPUT:  # input mixup
            kernels.blend(images, perm=params.perm, weights=lam, backend=backend, tag=self.name)
            return MixedBatch.with_partner(images, labels, params.perm, w_a=lam)
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"manifold mixup's layer {name!r} is not a module of {type(model).__name__}") from None
        pair = MixedBatch.with_partner(images, labels, params.perm, w_a=lam)
        hidden = HiddenMix(module=module, name=name, perm=params.perm.to(images.device), lam=params.lam)
        return HiddenMixedBatch(images, pair.y_a, pair.y_b, pair.w_a, pair.w_b, hidden=hidden)
