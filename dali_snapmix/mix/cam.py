"""Class activation maps (Zhou et al., CVPR 2016) for classifiers whose head is global
average pooling followed by one linear layer, as SnapMix uses them.

Only each sample's own-class map is computed: the classifier rows of the samples'
labels are gathered and contracted with the features (no convolution over all
classes). As in SnapMix's released code: ReLU on the features, the class bias added,
no ReLU on the map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["CAMHead", "class_activation_maps", "cams_from_features", "feature_module"]

_HOW = (
    "pass the feature extractor and the classifier explicitly: "
    "CAMHead(features=<callable: images -> NCHW feature map before pooling>, classifier=<nn.Linear>)"
)


@dataclass
class CAMHead:
    """Where a model's last feature map and its linear classifier are."""

    features: Callable[[torch.Tensor], torch.Tensor]
    classifier: nn.Linear

    def __post_init__(self) -> None:
        if not callable(self.features):
            raise ValueError(f"features must be callable, got {type(self.features).__name__}")
        if not isinstance(self.classifier, nn.Linear):
            raise ValueError(f"classifier must be an nn.Linear (the layer after global average pooling), "
                             f"got {type(self.classifier).__name__}")

    @classmethod
    def of(cls, model: nn.Module) -> CAMHead:
        """Find the head of: timm models (forward_features), torchvision ResNet, DenseNet,
        Inception v3, EfficientNet, and any model with ``features`` plus a linear ``fc`` or
        ``classifier`` (the built-in SmallCNN); the classifier as
        :func:`dali_snapmix.models.classifier_of` finds it."""
        from ..models import classifier_of

        m = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
        try:
            clf = classifier_of(m)
        except ValueError as e:
            raise ValueError(f"cannot find a global-average-pooling + linear head in {type(m).__name__} ({e}); {_HOW}") from None
        if hasattr(m, "forward_features") and hasattr(m, "get_classifier"):  # timm
            return cls(features=m.forward_features, classifier=clf)
        import torchvision.models as tvm

        nodes = {tvm.ResNet: "layer4", tvm.Inception3: "Mixed_7c"}  # the last map before pooling
        for kind, node in nodes.items():
            if isinstance(m, kind):
                from torchvision.models.feature_extraction import create_feature_extractor

                extractor = create_feature_extractor(m, return_nodes={node: "f"})
                return cls(features=lambda x, e=extractor: e(x)["f"], classifier=clf)
        feats = getattr(m, "features", None)
        if isinstance(feats, nn.Module):
            return cls(features=feats, classifier=clf)
        raise ValueError(f"cannot find a global-average-pooling + linear head in {type(m).__name__} "
                         f"(classifier {type(clf).__name__}, but no features module); {_HOW}")


def class_activation_maps(head: CAMHead, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, h, w) float64 CAM of each sample's own class: w[y] . relu(F) + b[y]."""
    return cams_from_features(head.classifier, head.features(images), labels)


def cams_from_features(classifier: nn.Linear, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The CAMs of an already computed (N, C, h, w) feature map."""
    if not isinstance(feats, torch.Tensor) or feats.dim() != 4:
        raise ValueError(f"the feature extractor must return an NCHW map, got {getattr(feats, 'shape', type(feats).__name__)}")
    W = classifier.weight
    if feats.shape[1] != W.shape[1]:
        raise ValueError(
            f"feature map has {feats.shape[1]} channels but the classifier takes {W.shape[1]} inputs: "
            f"not a global-average-pooling + linear head; {_HOW}"
        )
    if int(labels.max()) >= W.shape[0]:
        raise ValueError(f"label {int(labels.max())} is out of range for a classifier with {W.shape[0]} classes")
    # float64: the SPM subtracts the map's minimum, and a map that varies little around
    # a large value would lose its variation to float32 rounding there
    feats = torch.relu(feats.detach()).double()
    rows = W.detach()[labels].double()  # (N, C): only the classes we need
    cam = torch.einsum("nchw,nc->nhw", feats, rows)
    if classifier.bias is not None:
        cam = cam + classifier.bias.detach()[labels].double()[:, None, None]
    return cam.contiguous()


@torch.no_grad()
def feature_module(model: nn.Module, head: CAMHead, probe: torch.Tensor) -> nn.Module | None:
    """The submodule of ``model`` whose output, in the model's own forward, is the
    feature map ``head.features`` returns (ResNet's layer4, EfficientNet's bn2, ...):
    the outermost such module that runs once per forward (a ReLU reused inside a block
    also returns the map, but fires twice). Found with one probe image in eval mode;
    None if there is none (the map is computed outside any module)."""
    was_training = model.training
    model.eval()
    fired: dict[nn.Module, int] = {}
    matched: list[nn.Module] = []

    def hook(mod, _inputs, out):
        fired[mod] = fired.get(mod, 0) + 1
        if isinstance(out, torch.Tensor) and out.shape == feats.shape and torch.equal(out, feats):
            matched.append(mod)  # compared now: a later in-place op may change the tensor

    try:
        feats = head.features(probe).clone()
        handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
        try:
            model(probe)
        finally:
            for h in handles:
                h.remove()
    finally:
        model.train(was_training)
    return next((m for m in reversed(matched) if fired[m] == 1), None)
