"""Manifold Mixup against a transcription of the paper's forward (the network written out
layer by layer, the hidden states mixed by hand) on the same weights and params: the mixed
hidden state, the logits, the loss of one step and the weights after it; the layers each
architecture gets; the hook's once-only rule; bad parameters."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from mix_helpers import SEED

from dali_snapmix.mix import BlendParams, ManifoldMixup, Mixup, build_mix, hidden_mixing, mixed_cross_entropy
from dali_snapmix.mix.manifold import ManifoldParams, manifold_layers
from dali_snapmix.models import SmallCNN


def resnet_by_hand(m, x, *, at, lam, perm):
    """torchvision's ResNet forward written out, h -> lam h + (1 - lam) h[perm] after
    block group ``at`` (1 or 2); returns (mixed hidden state, logits)."""
    h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    mixed = None
    for k, group in enumerate((m.layer1, m.layer2, m.layer3, m.layer4), start=1):
        h = group(h)
        if k == at:
            h = mixed = lam * h + (1 - lam) * h[perm]
    return mixed, m.fc(torch.flatten(m.avgpool(h), 1))


def one_step(model, x, y, forward):
    """Loss and the weights after one SGD step (lr 0.1) of a deep copy of ``model``."""
    m = copy.deepcopy(model)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = forward(m)
    loss.backward()
    opt.step()
    return loss.detach(), torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize("layer", [1, 2])
def test_hidden_mix_step_matches_the_transcription(layer):
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED % 1000)
    model = torchvision.models.resnet18(num_classes=5).train()
    x = torch.from_numpy(rng.standard_normal((5, 3, 40, 40)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 5, 5))
    mix = ManifoldMixup()
    p = ManifoldParams(mix=True, perm=torch.from_numpy(rng.permutation(5)), lam=float(rng.beta(2, 2)), layer=layer)
    caught = {}

    def ours(m):
        target = mix.apply(x.clone(), y, p, model=m)
        assert torch.equal(target.images, x)  # the input is not touched: the mix is inside the model
        grab = m.get_submodule(f"layer{layer + 1}").register_forward_pre_hook(lambda mod, a: caught.update(h=a[0]))
        with hidden_mixing(target):
            logits = m(target.images)
        grab.remove()
        caught["logits"], caught["target"] = logits, target
        return mixed_cross_entropy(logits, target)

    def by_hand(m):
        h, logits = resnet_by_hand(m, x, at=layer, lam=p.lam, perm=p.perm)
        caught["h_ref"], caught["logits_ref"] = h, logits
        return (p.lam * F.cross_entropy(logits, y, reduction="none")
                + (1 - p.lam) * F.cross_entropy(logits, y[p.perm], reduction="none")).mean()

    loss, weights = one_step(model, x, y, ours)
    loss_ref, weights_ref = one_step(model, x, y, by_hand)
    torch.testing.assert_close(caught["h"], caught["h_ref"], rtol=0, atol=1e-5)  # the mixed hidden state
    torch.testing.assert_close(caught["logits"], caught["logits_ref"], rtol=0, atol=1e-5)
    assert abs(loss.item() - loss_ref.item()) <= 1e-5
    torch.testing.assert_close(weights, weights_ref, rtol=0, atol=1e-5)
    t = caught["target"]
    assert torch.equal(t.y_b, y[p.perm]) and float(t.w_a[0]) == pytest.approx(p.lam, abs=1e-7)
    assert torch.allclose(t.w_a + t.w_b, torch.ones(5))


def test_input_layer_is_mixup_and_the_hook_is_gone_after_the_forward(rng):
    x = torch.from_numpy(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    y = torch.arange(4)
    model = SmallCNN(4, width=4).eval()
    p = ManifoldParams(mix=True, perm=torch.tensor([2, 0, 3, 1]), lam=0.3, layer=0)
    got = ManifoldMixup().apply(x.clone(), y, p, model=model)
    want = Mixup(prob=1.0).apply(x.clone(), y, BlendParams(mix=True, perm=p.perm, lam=torch.full((4,), 0.3)))
    assert torch.equal(got.images, want.images) and torch.equal(got.weights, want.weights)
    hidden = ManifoldMixup().apply(x.clone(), y, ManifoldParams(mix=True, perm=p.perm, lam=0.3, layer=1), model=model)
    with torch.no_grad():
        with hidden_mixing(hidden):
            mixed = model(x)
        plain = model(x)  # no hook left behind
    assert not torch.allclose(mixed, plain) and torch.equal(plain, model(x))


def test_layers_per_architecture():
    assert manifold_layers(torchvision.models.resnet50(num_classes=3)) == ("layer1", "layer2")
    assert manifold_layers(SmallCNN(3, width=4)) == ("features.0", "features.1")
    timm = pytest.importorskip("timm")
    assert manifold_layers(timm.create_model("tf_efficientnet_lite0", num_classes=3)) == ("blocks.1", "blocks.2")
    assert manifold_layers(timm.create_model("resnet18", num_classes=3)) == ("layer1", "layer2")
    with pytest.raises(ValueError, match=r"reductions 4 and 8 \(only at \[16\]\)"):
        manifold_layers(timm.create_model("vit_tiny_patch16_224", num_classes=3))
    with pytest.raises(ValueError, match="not DenseNet: name them with layers="):
        manifold_layers(torchvision.models.densenet121(num_classes=3))


def test_sampling_covers_the_set_and_named_layers_work(rng):
    x, y = torch.zeros(6, 3, 16, 16), torch.zeros(6, dtype=torch.int64)
    mix = build_mix("manifold", seed=int(rng.integers(1 << 30)))
    drawn = [mix.sample(x, y) for _ in range(60)]
    assert {p.layer for p in drawn} == {0, 1, 2} and all(0 < p.lam < 1 for p in drawn)
    model = SmallCNN(3, width=4)
    named = ManifoldMixup(layers=("", "features.2"))
    out = named.apply(x.clone(), y, ManifoldParams(mix=True, perm=torch.arange(6), lam=0.5, layer=1), model=model)
    assert out.hidden.name == "features.2" and out.hidden.module is model.features[2]


def test_a_module_that_runs_twice_or_not_at_all_is_an_error():
    relu = torch.nn.ReLU()
    twice = torch.nn.Sequential(relu, relu)
    other = torch.nn.Sequential(torch.nn.Identity(), torch.nn.ReLU())
    x, y = torch.randn(2, 3, 4, 4), torch.arange(2)
    p = ManifoldParams(mix=True, perm=torch.tensor([1, 0]), lam=0.5, layer=1)
    out = ManifoldMixup(layers=("", "0")).apply(x, y, p, model=twice)
    with pytest.raises(RuntimeError, match="'0' ran twice"), hidden_mixing(out):
        twice(x)
    with pytest.raises(RuntimeError, match="'0' did not run"), hidden_mixing(out):
        other(x)


def test_bad_parameters_are_refused():
    x, y = torch.zeros(3, 3, 8, 8), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="-2"):
        ManifoldMixup(beta=-2)
    with pytest.raises(ValueError, match=r"\('layer1', 'layer1'\)"):
        ManifoldMixup(layers=("layer1", "layer1"))
    with pytest.raises(ValueError, match="got 3"):
        ManifoldMixup().apply(x, y, ManifoldParams(mix=True, perm=torch.arange(3), lam=0.5, layer=3), model=SmallCNN(2))
    with pytest.raises(ValueError, match="got 1.5"):
        ManifoldMixup().apply(x, y, ManifoldParams(mix=True, perm=torch.arange(3), lam=1.5, layer=1), model=SmallCNN(2))
    with pytest.raises(ValueError, match="'layer9' is not a module of SmallCNN"):
        ManifoldMixup(layers=("", "layer9")).apply(x, y, ManifoldParams(mix=True, perm=torch.arange(3), lam=0.5,
                                                                         layer=1), model=SmallCNN(2))
    with pytest.raises(ValueError, match="apply it with model="):
        ManifoldMixup().apply(x, y, ManifoldParams(mix=True, perm=torch.arange(3), lam=0.5, layer=1))
