"""Mixing methods: one module per method, one label contract (K labels and weights; y_a, y_b, w_a, w_b for two).

    mix = build_mix("snapmix", num_classes=200)
    out = mix(batch.images, batch.labels, model=model)   # images mixed in place
    with hidden_mixing(out):                              # Manifold Mixup's hook; else nothing
        loss = mixed_cross_entropy(model(out.images), out)
"""

from __future__ import annotations

from .attentivemix import AttentiveMix
from .automix import AutoMix
from .base import LOSSES, MixedBatch, MixMethod, mixed_bce_on_softmax, mixed_cross_entropy, soft_targets
from .baseline import Baseline
from .cam import CAMHead, class_activation_maps
from .cam_cache import CAMCache
from .comixup import CoMixup
from .cutmix import CutMix
from .cutout import CutOut
from .fmix import FMix
from .guidedmixup import GuidedMixup
from .manifold import ManifoldMixup, hidden_mixing
from .mixed_example import MixedExample
from .mixup import Mixup
from .params import BlendParams, BoxParams, CutOutParams, MaskParams
from .puzzlemix import PuzzleMix
from .resizemix import ResizeMix
from .ricap import RICAP, RICAPParams
from .saliencymix import SaliencyMix
from .samplepairing import SamplePairing
from .smoothmix import SmoothMix
from .snapmix import SnapMix

__all__ = [
    "LOSSES", "METHODS", "AttentiveMix", "AutoMix", "Baseline", "BlendParams", "BoxParams", "CAMCache", "CAMHead", "CoMixup", "CutMix", "CutOut", "CutOutParams", "FMix", "GuidedMixup", "ManifoldMixup", "MaskParams", "MixMethod",
    "MixedBatch", "MixedExample", "Mixup", "PuzzleMix", "RICAP", "RICAPParams", "ResizeMix", "SaliencyMix", "SamplePairing", "SmoothMix", "SnapMix", "build_mix", "class_activation_maps", "hidden_mixing", "mixed_bce_on_softmax", "mixed_cross_entropy", "soft_targets",
]

METHODS = {
    "baseline": Baseline,
    "mixup": Mixup,
    "cutmix": CutMix,
    "as-cutmix": lambda **kw: CutMix(asymmetric=True, **kw),
    "cutout": CutOut,
    "snapmix": SnapMix,
    "resizemix": ResizeMix,
    "ricap": RICAP,
    "fmix": FMix,
    "smoothmix": SmoothMix,
    "samplepairing": SamplePairing,
    "mixed-example": MixedExample,
    "saliencymix": SaliencyMix,
    "manifold": ManifoldMixup,
    "guided-sr": lambda **kw: GuidedMixup(variant="sr", **kw),
    "guided-ap": lambda **kw: GuidedMixup(variant="ap", **kw),
    "attentivemix": AttentiveMix,
    "puzzlemix": PuzzleMix,
    "comixup": CoMixup,
    "automix": AutoMix,  # needs its teacher: AutoMix.following(model, ...), or the trainer's build_mixer
}


def build_mix(name: str, **options) -> MixMethod:
    """A mixing method by name, with the paper's defaults unless ``options`` say otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown mixing method {name!r}; choose one of {list(METHODS)}")
    return METHODS[name](**options)
