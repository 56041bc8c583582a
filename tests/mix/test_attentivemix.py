"""AttentiveMix against a per-sample transcription of the paper's recipe in float64 numpy
(each partner's CAM computed from the model's weights, PyTorch's adaptive-pool windows,
a stable top-k, the cells pasted by slices from a copy of the batch, the pasted share as
the label), with the model being trained and with a fixed attention network; the
invariants (outside the cells untouched, inside the partner's pixels, bit for bit) and
the errors."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from mix_helpers import SEED

from dali_snapmix.mix import AttentiveMix, build_mix
from dali_snapmix.mix.params import MaskParams, PartnerParams

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Patchy(nn.Module):
    """A CAM-able classifier whose map has one cell per 4 x 4 patch."""

    def __init__(self, classes=5, width=6, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, width, 4, stride=4), nn.BatchNorm2d(width))
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.features(x)).mean((2, 3)))


def own_cams_np(model, x, y):
    """w[y] . relu(F) + b[y] per sample, F from the eval-mode features, float64."""
    model.eval()
    with torch.no_grad():
        f = np.maximum(model.features(x).double().numpy(), 0)
    w, b = model.fc.weight.detach().double().numpy(), model.fc.bias.detach().double().numpy()
    return np.stack([np.tensordot(w[y[i]], f[i], axes=1) + b[y[i]] for i in range(len(y))])


def adaptive_cells_np(a, g):
    """PyTorch's adaptive average pooling windows: cell i spans [floor(i h / g), ceil((i+1) h / g))."""
    h, w = a.shape
    out = np.empty((g, g))
    for i in range(g):
        for j in range(g):
            r0, r1 = (i * h) // g, -((-(i + 1) * h) // g)
            c0, c1 = (j * w) // g, -((-(j + 1) * w) // g)
            out[i, j] = a[r0:r1, c0:c1].mean()
    return out


def transcription(x, y, perm, maps, *, k, g):
    """x~ and the partner's label weight, one sample at a time: the partner's map in cells,
    its k best (first in row-major order on ties), each cell pasted by a slice."""
    n, _, h, w = x.shape
    src = x.double().numpy()
    out = src.copy()
    w_b = np.zeros(n)
    for i in range(n):
        j = int(perm[i])
        cells = adaptive_cells_np(maps[j], g).ravel()
        for c in np.argsort(-cells, kind="stable")[:k]:
            a, b = divmod(int(c), g)
            r0, r1 = -((-a * h) // g), -((-(a + 1) * h) // g)  # rows r with floor(r g / h) = a
            c0, c1 = -((-b * w) // g), -((-(b + 1) * w) // g)
            out[i, :, r0:r1, c0:c1] = src[j, :, r0:r1, c0:c1]
            w_b[i] += (r1 - r0) * (c1 - c0) / (h * w)
    return out, w_b


@pytest.mark.parametrize("n,h,w,k,g", [(5, 28, 28, 6, 7), (1, 28, 28, 6, 7), (8, 56, 56, 6, 7), (4, 28, 36, 3, 7),
                                       (3, 20, 20, 2, 3), (2, 16, 16, 16, 4)])
def test_matches_the_transcription_with_the_models_cams(n, h, w, k, g):
    """Map 7 x 7 = the grid; 14 x 14 averaged 2 x 2; 7 x 9 into 7 x 7 windows; grids that
    do not divide the side (3 over 20 px); k = every cell (the partner's whole image)."""
    rng = np.random.default_rng([SEED, n, h, w])
    x = torch.from_numpy(rng.standard_normal((n, 3, h, w)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 5, n))
    model = Patchy().train()
    mix = AttentiveMix(k=k, grid=g, num_classes=5)
    params = mix.sample(x, y, rng=np.random.default_rng(SEED))
    assert isinstance(params, PartnerParams) and params.mix
    before = {k_: v.clone() for k_, v in model.state_dict().items()}
    out = mix(x.clone(), y, params=params, model=model)
    for k_, v in model.state_dict().items():  # the CAM pass ran in eval mode: BatchNorm untouched
        assert torch.equal(v, before[k_]), k_
    assert model.training
    want, w_b = transcription(x, y.numpy(), params.perm.numpy(), own_cams_np(model, x, y.numpy()), k=k, g=g)
    assert np.array_equal(out.images.double().numpy(), want), SEED
    assert torch.equal(out.y_b, y[params.perm]) and torch.equal(out.y_a, y)
    assert np.abs(out.w_b.double().numpy() - w_b).max() <= 1e-7 and np.abs(out.w_a.double().numpy() + w_b - 1).max() <= 1e-7
    if h % g == 0 and w % g == 0:
        assert np.allclose(w_b, k / g ** 2)


def test_the_partners_cells_not_the_own_and_rows_not_columns():
    """Mutations the transcription catches: cells from the sample's own map, or the grid's
    rows and columns swapped (a non-square batch whose maps are far from symmetric)."""
    rng = np.random.default_rng(SEED)
    x = torch.from_numpy(rng.standard_normal((6, 3, 28, 28)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 5, 6))
    model = Patchy()
    mix = AttentiveMix()
    params = PartnerParams(mix=True, perm=torch.tensor([1, 2, 3, 4, 5, 0]))
    out = mix(x.clone(), y, params=params, model=model).images.double().numpy()
    maps = own_cams_np(model, x, y.numpy())
    right, _ = transcription(x, y.numpy(), params.perm.numpy(), maps, k=6, g=7)
    assert np.array_equal(out, right)
    own, _ = transcription(x, y.numpy(), params.perm.numpy(), maps[params.perm.numpy().argsort()], k=6, g=7)
    swapped, _ = transcription(x, y.numpy(), params.perm.numpy(), maps.transpose(0, 2, 1), k=6, g=7)
    assert not np.array_equal(out, own) and not np.array_equal(out, swapped)


def test_outside_the_cells_untouched_inside_the_partner_and_ties_in_row_major_order():
    """A flat map (every cell ties): the first k cells of row 0; a self-pair changes nothing."""
    x = torch.randn(3, 3, 14, 14, generator=torch.Generator().manual_seed(SEED % 2**31))
    y = torch.tensor([0, 1, 2])
    mix = AttentiveMix(k=3, grid=7)
    mix.attention = lambda images, labels, model=None: torch.zeros(len(images), 7, 7, dtype=torch.float64)
    out = mix(x.clone(), y, params=PartnerParams(mix=True, perm=torch.tensor([1, 0, 2])))
    assert torch.equal(out.images[0, :, :2, :6], x[1, :, :2, :6]) and torch.equal(out.images[0, :, :2, 6:], x[0, :, :2, 6:])
    assert torch.equal(out.images[0, :, 2:], x[0, :, 2:]) and torch.equal(out.images[2], x[2])
    assert torch.equal(out.images[1, :, :2, :6], x[0, :, :2, :6])
    assert torch.allclose(out.w_b, torch.full((3,), 3 / 49))


class FixedNet(nn.Module):
    """A stand-in for a pretrained network with its own normalisation: features + fc."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU(), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 1000)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


@pytest.mark.parametrize("n,h", [(4, 40), (1, 56)])
def test_fixed_attention_model(n, h):
    """The paper's way: a fixed network, eval mode, the batch re-normalised to its own
    statistics and resized to 56 (a 7 x 7 map); its channel mean's top cells. Sampled
    without the model being trained; the fixed network is frozen."""
    rng = np.random.default_rng([SEED, n])
    x = torch.from_numpy(rng.standard_normal((n, 3, h, h)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 5, n))
    net = FixedNet().train()
    amean, astd = (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)
    mix = AttentiveMix(attention_model=net, attention_size=56, attention_mean=amean, attention_std=astd, mean=MEAN,
                       std=STD, num_classes=5)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    params = mix.sample(x, y, rng=np.random.default_rng(SEED))
    assert isinstance(params, MaskParams)
    out = mix.apply(x.clone(), y, params)
    x01 = x.double() * torch.tensor(STD, dtype=torch.float64)[:, None, None] + torch.tensor(MEAN, dtype=torch.float64)[:, None, None]
    xa = (x01 - torch.tensor(amean, dtype=torch.float64)[:, None, None]) / torch.tensor(astd, dtype=torch.float64)[:, None, None]
    maps = []
    with torch.no_grad():
        for i in range(n):  # one image at a time, as the unofficial release
            one = torch.nn.functional.interpolate(xa[i:i + 1], size=(56, 56), mode="bilinear", align_corners=False)
            maps.append(net.features(one.float()).double().mean(1)[0].numpy())
    want, w_b = transcription(x, y.numpy(), params.perm.numpy(), np.stack(maps), k=6, g=7)
    assert np.array_equal(out.images.double().numpy(), want), SEED
    assert np.abs(out.w_b.double().numpy() - w_b).max() <= 1e-7


def test_unmixed_batch_gets_no_attention_pass_and_bad_input_is_refused():
    x, y = torch.randn(2, 3, 14, 14), torch.tensor([0, 1])
    mix = AttentiveMix(prob=0.0)
    out = mix(x.clone(), y)  # no model needed: the coin said no
    assert torch.equal(out.images, x) and torch.equal(out.w_a, torch.ones(2))
    with pytest.raises(ValueError, match="apply it with model="):
        AttentiveMix()(x.clone(), y)
    for kw, bad in [({"k": 0}, "k must be an int in \\[1, grid\\^2 = 49\\], got 0"), ({"k": 50}, "got 50"),
                    ({"grid": 0}, "grid must be a positive int, got 0"), ({"attention_size": 0}, "got 0"),
                    ({"attention_model": "resnet50"}, "attention_model must be an nn.Module, got str"),
                    ({"attention_mode": "test"}, "'test'"), ({"prob": 1.5}, "1.5")]:
        with pytest.raises(ValueError, match=bad):
            AttentiveMix(**kw)
    mix = AttentiveMix()
    mix.attention = lambda images, labels, model=None: torch.full((len(images), 7, 7), float("nan"))
    with pytest.raises(ValueError, match="attention map of sample 0 is not finite"):
        mix(x.clone(), y, params=PartnerParams(mix=True, perm=torch.tensor([1, 0])))
    assert isinstance(build_mix("attentivemix", num_classes=3), AttentiveMix)
