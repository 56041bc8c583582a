"""Every kernel refuses bad input naming the value, before writing anything."""


import pytest
import torch
from dali_snapmix.kernels import blend, fill_box, mask_blend, paste_resized, spm_box_mass


def test_bad_input_is_named():
    x = torch.randn(2, 3, 8, 8)
    perm = torch.tensor([1, 0])
    box = torch.tensor([[0, 4, 0, 4], [1, 5, 1, 5]])
    with pytest.raises(ValueError, match="float64"):
        paste_resized(x.double(), perm=perm, src_box=box, dst_box=box)
    with pytest.raises(ValueError, match="contiguous"):
        paste_resized(x.transpose(2, 3), perm=perm, src_box=box, dst_box=box)
    with pytest.raises(ValueError, match="NCHW"):
        blend(x[0], perm=perm, weights=torch.rand(2))
    with pytest.raises(ValueError, match=r"dst_box\[1\] = \[1, 9, 1, 5\]"):
        paste_resized(x, perm=perm, src_box=box, dst_box=torch.tensor([[0, 4, 0, 4], [1, 9, 1, 5]]))
    with pytest.raises(ValueError, match=r"src_box\[0\] = \[3, 2, 0, 4\]"):
        paste_resized(x, perm=perm, src_box=torch.tensor([[3, 2, 0, 4], [0, 1, 0, 1]]), dst_box=box)
    with pytest.raises(ValueError, match=r"perm entries must be in \[0, 2\), got \[2, 0\]"):
        paste_resized(x, perm=torch.tensor([2, 0]), src_box=box, dst_box=box)
    with pytest.raises(ValueError, match="permutation"):
        blend(x, perm=torch.tensor([0, 0]), weights=torch.rand(2))
    with pytest.raises(ValueError, match=r"perm entries must be in \[0, 2\), got \[-1, 0\]"):
        paste_resized(x, perm=torch.tensor([-1, 0]), src_box=box, dst_box=box)
    with pytest.raises(ValueError, match=r"boxes\[1\] = \[0, 1, 2, 9\] .* x1 <= 8"):
        fill_box(x, boxes=torch.tensor([[0, 1, 0, 1], [0, 1, 2, 9]]))
    # int32 index tensors are accepted (converted), with the same result as int64
    want = paste_resized(x.clone(), perm=perm, src_box=box, dst_box=box)
    assert torch.equal(paste_resized(x.clone(), perm=perm.int(), src_box=box.int(), dst_box=box.int()), want)
    with pytest.raises(ValueError, match="NaN"):
        blend(x, perm=perm, weights=torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="masks must have shape"):
        mask_blend(x, perm=perm, masks=torch.rand(2, 8, 7))
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        fill_box(x, boxes=box, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        fill_box(x, boxes=box, backend="gpu")
    with pytest.raises(ValueError, match="value must be"):
        fill_box(x, boxes=box, value=(1.0, 2.0))
    with pytest.raises(ValueError, match="cams must be float32 or float64"):
        spm_box_mass(torch.zeros(2, 3, 3, dtype=torch.float16), box, image_size=(8, 8))
    with pytest.raises(ValueError, match="image_size"):
        spm_box_mass(torch.zeros(2, 3, 3), box, image_size=(8, 0))
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        spm_box_mass(torch.zeros(2, 3, 3), torch.tensor([[0, 4, 0, 4], [0, 4, 0, 9]]), image_size=(8, 8))
