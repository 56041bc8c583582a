"""Class activation maps of real architectures: the head found, the CAM against a
convolution over all classes and against the model's own logits; one classifier discovery."""


import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mix_helpers import assert_close

from dali_snapmix.mix import (
    BoxParams,
    CAMHead,
    SnapMix,
    class_activation_maps,
)
from dali_snapmix.models import SmallCNN

# ---------------------------------------------------------------- CAMs of real architectures


def _tv(name, **kw):
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, num_classes=5, **kw).eval()


@pytest.mark.parametrize("name,size,feats", [
    ("resnet18", 64, lambda m, x: m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))),
    ("densenet121", 64, lambda m, x: m.features(x)),
    ("efficientnet_b0", 64, lambda m, x: m.features(x)),
    ("inception_v3", 80, None),
])
def test_cam_head_of_torchvision_models(rng, name, size, feats):
    m = _tv(name, **({"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}))
    x = torch.from_numpy(rng.standard_normal((2, 3, size, size)).astype(np.float32))
    y = torch.tensor([1, 4])
    head = CAMHead.of(m)
    with torch.no_grad():
        cam = class_activation_maps(head, x, y)
        logits = m(x)
        if feats is not None:  # against a conv over all classes on hand-extracted features
            f = F.relu(feats(m, x))
            clf = head.classifier
            full = F.conv2d(f, clf.weight[:, :, None, None], bias=clf.bias)
            assert_close(cam, full[torch.arange(2), y], 1e-4)
    if name != "efficientnet_b0":  # (its features end in SiLU, so the ReLU of the CAM changes them)
        # GAP of the CAM is the model's own logit for that class
        assert_close(cam.mean((1, 2)), logits[torch.arange(2), y], 1e-4)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "efficientnet_b0", "inception_v3", "small_cnn"])
def test_one_classifier_discovery_serves_the_trainer_and_the_cam_head(name):
    """The layer the trainer treats as the new head is the layer CAMs are read from, named
    here by hand for each architecture."""
    from dali_snapmix.models import classifier_of

    m = SmallCNN(5) if name == "small_cnn" else _tv(name, **({"aux_logits": True, "init_weights": False}
                                                            if name == "inception_v3" else {}))
    want = {"resnet18": "fc", "densenet121": "classifier", "efficientnet_b0": "classifier.1", "inception_v3": "fc",
            "small_cnn": "fc"}[name]
    assert classifier_of(m) is m.get_submodule(want) and CAMHead.of(m).classifier is m.get_submodule(want)
    ddp_like = torch.nn.DataParallel(m)  # unwrapped, as the trainer may hold it
    assert classifier_of(ddp_like) is m.get_submodule(want)


def test_timm_models_when_installed(rng):
    timm = pytest.importorskip("timm", reason="timm is optional")
    m = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    x = torch.from_numpy(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        cam = class_activation_maps(CAMHead.of(m), x, torch.tensor([0, 3]))
        assert_close(cam.mean((1, 2)), m(x)[torch.arange(2), torch.tensor([0, 3])], 1e-4)


def test_models_without_a_cam_head_get_a_clear_error():
    import torchvision

    m = torchvision.models.mobilenet_v3_small(weights=None, num_classes=5)
    with pytest.raises(ValueError, match="cannot find a global-average-pooling \\+ linear head in MobileNetV3.*CAMHead\\(features="):
        CAMHead.of(m)
    from dali_snapmix.models import classifier_of

    with pytest.raises(ValueError, match=r"linear classifier of MobileNetV3 \(found: classifier=Sequential\)"):
        classifier_of(m)
    bad = CAMHead(features=lambda x: torch.zeros(len(x), 7, 2, 2), classifier=nn.Linear(9, 3))
    with pytest.raises(ValueError, match="7 channels but the classifier takes 9"):
        class_activation_maps(bad, torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs the model"):
        sm = SnapMix(seed=0)
        x = torch.zeros(2, 3, 8, 8)
        sm.apply(x, torch.tensor([0, 1]), BoxParams(True, torch.tensor([1, 0]), torch.tensor([[0, 4, 0, 4]] * 2), torch.tensor([[0, 4, 0, 4]] * 2)))


@pytest.mark.parametrize("normalise", [False, True])
def test_midlevel_branch_logits_and_its_cam_head(normalise):
    """The baseline+ branch on SmallCNN: it reads the third stage (twice the last stage's
    resolution), its logits are its linear layer over the max-pooled relu(conv(map)) (with
    ``normalise``, of the map batch-normalised first), and its CAM head gives the
    classifier's weights over that same map, each against the stages run by hand (no hook)."""
    from dali_snapmix.models import MidLevel, mid_layer

    torch.manual_seed(0)
    m = SmallCNN(5, width=8).eval()
    layer, width, released = mid_layer(m)
    assert layer is m.features[2] and width == 32 and not released
    branch = MidLevel(m, layer, width, 5, normalise=normalise).eval()
    with torch.no_grad():
        branch.fc.bias.normal_(0, 1)
        x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 4, 1])
        mid = m.features[2](m.features[1](m.features[0](x)))
        if normalise:  # eval mode: the running statistics, here made up
            bn = branch.conv[0]
            bn.running_mean.normal_(0, 1), bn.running_var.uniform_(0.5, 2), bn.weight.normal_(1, 0.2), bn.bias.normal_(0, 0.2)
            mid = (mid - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
            mid = mid * bn.weight[:, None, None] + bn.bias[:, None, None]
        conv = branch.conv[-2]
        want_map = F.relu(F.conv2d(mid, conv.weight, conv.bias))
        _, logits = branch(x)
        cams = class_activation_maps(branch.cam_head(), x, y)
        last = m.features(x)
    assert want_map.shape[-2:] == (4, 4) and last.shape[-2:] == (2, 2)
    torch.testing.assert_close(logits, F.linear(want_map.amax((2, 3)), branch.fc.weight, branch.fc.bias))
    want = torch.einsum("nchw,nc->nhw", want_map.double(), branch.fc.weight[y].double()) + branch.fc.bias[y].double()[:, None, None]
    torch.testing.assert_close(cams, want, rtol=1e-6, atol=1e-6)
