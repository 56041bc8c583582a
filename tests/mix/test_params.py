"""Replayed params are checked against the batch before anything is written."""


import pytest
import torch
from mix_helpers import assert_close, batch, model

from dali_snapmix.mix import (
    BlendParams,
    BoxParams,
    CutMix,
    CutOut,
    CutOutParams,
    Mixup,
    SnapMix,
    build_mix,
)

# ---------------------------------------------------------------- replayed params are checked


def _params_cases(n, h, w):
    perm = torch.arange(n).flip(0)
    box = torch.tensor([[0, h // 2, 0, w // 2]] * n)
    return [
        (CutMix(), BoxParams(True, perm[:-1], box[:-1], box[:-1]), r"perm must be a torch.int64 tensor of shape \(5,\), got torch.int64 of shape \(4,\)"),
        (CutMix(), BoxParams(True, perm + 1, box, box), r"perm must index the batch of 5, got values from 1 to 5"),
        (CutMix(), BoxParams(True, perm, box.clone().index_put_((torch.tensor([2]), torch.tensor([1])), torch.tensor(h + 1)), box),
         rf"src_box\[2\] = \[0, {h + 1}, 0, {w // 2}\] \(y0, y1, x0, x1\) does not lie inside the {h}x{w} images"),
        (SnapMix(), BoxParams(True, perm, box, torch.tensor([[3, 1, 0, 4]] * n)), r"dst_box\[0\] = \[3, 1, 0, 4\]"),
        (SnapMix(), BoxParams(True, perm, box, box.float()), r"dst_box must be a torch.int64 tensor of shape \(5, 4\), got torch.float32"),
        (Mixup(), BlendParams(True, perm, torch.full((n,), 1.5)), r"lam must be in \[0, 1\], got lam\[0\] = 1.5"),
        (Mixup(), BlendParams(True, perm, torch.full((n + 1,), 0.5)), r"lam must be a torch.float32 or torch.float64 tensor of shape \(5,\)"),
        (CutOut(), CutOutParams(True, torch.tensor([[0, 2, -1, 3]] * n)), r"box\[0\] = \[0, 2, -1, 3\]"),
        (CutMix(), BlendParams(True, perm, torch.full((n,), 0.5)), "CutMix takes BoxParams, got BlendParams"),
        (build_mix("baseline"), BlendParams(True, perm, torch.full((n,), 0.5)), "Baseline takes NoneType, got BlendParams"),
    ]


@pytest.mark.parametrize("case", range(10))
@pytest.mark.parametrize("entry", ["apply", "call"])
def test_replayed_params_that_do_not_fit_the_batch_are_refused(rng, case, entry):
    """apply() (and __call__ with params=) check the params against the batch before any
    kernel writes: another batch size, a box outside the image, a partner out of range."""
    x, y = batch(rng, n=5, size=12)
    mix, p, msg = _params_cases(5, 12, 12)[case]
    before = x.clone()
    with pytest.raises(ValueError, match=msg):
        if entry == "apply":
            mix.apply(x, y, p, model=model())
        else:
            mix(x, y, params=p, model=model())
    assert torch.equal(x, before)  # nothing written


def test_fitting_replayed_params_pass_the_check(rng):
    """The edges that are legal: full-image boxes, 1-pixel boxes, empty boxes, self-pairs."""
    x, y = batch(rng, n=3, size=12)
    full = torch.tensor([[0, 12, 0, 12], [5, 6, 11, 12], [4, 4, 0, 12]])
    out = CutMix().apply(x.clone(), y, BoxParams(True, torch.tensor([0, 2, 1]), full, full))
    assert torch.equal(out.images[0], x[0])  # a self-pair pastes itself
    assert_close(out.w_b, torch.tensor([1.0, 1 / 144, 0.0]))
