"""blend and mask_blend against float64 torch, and the permutation cycles they walk."""


import pytest
import torch
from dali_snapmix.kernels import blend, mask_blend
from dali_snapmix.kernels.blend import cycles
from kernel_helpers import TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("B", [1, 2, 7, 16])
@pytest.mark.parametrize("H,W", [(11, 13), (23, 29)])  # a plane inside one CPU chunk (256 px), and over three
def test_blend_and_mask_blend(g, dtype, B, H, W):
    x = torch.randn(B, 3, H, W, generator=g).to(dtype)
    for perm in (torch.randperm(B, generator=g), torch.arange(B), torch.roll(torch.arange(B), 1)):
        w = torch.rand(B, generator=g)
        want = w.double()[:, None, None, None] * x.double() + (1 - w.double())[:, None, None, None] * x.double()[perm]
        got = blend(x.clone(), perm=perm, weights=w, backend="cpu")
        assert (got.double() - want).abs().max() <= TOL[dtype]
        m = torch.rand(B, H, W, generator=g)
        want = m.double()[:, None] * x.double() + (1 - m.double())[:, None] * x.double()[perm]
        got = mask_blend(x.clone(), perm=perm, masks=m, backend="cpu")
        assert (got.double() - want).abs().max() <= TOL[dtype]


def test_cycles_cover_the_permutation(g):
    for perm, ncycles in ((torch.randperm(13, generator=g), None), (torch.arange(5), 5), (torch.tensor([0]), 1)):
        order, starts = cycles(perm)
        assert sorted(order.tolist()) == list(range(len(perm)))
        assert ncycles is None or len(starts) - 1 == ncycles
        for s, e in zip(starts[:-1].tolist(), starts[1:].tolist()):
            seg = order[s:e].tolist()
            assert [int(perm[i]) for i in seg] == seg[1:] + seg[:1]
