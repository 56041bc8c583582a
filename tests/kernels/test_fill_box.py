"""fill_box against a slice fill."""


import pytest
import torch
from dali_snapmix.kernels import fill_box
from kernel_helpers import rand_boxes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fill_box(g, dtype):
    B, H, W = 9, 15, 17
    x = torch.randn(B, 3, H, W, generator=g).to(dtype)
    boxes = rand_boxes(g, B, H, W)
    boxes[0] = torch.tensor([0, H, 0, W])
    boxes[1] = torch.tensor([H - 1, H, 0, 1])
    val = (0.25, -1.5, 3.0)
    want = x.clone()
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        for c in range(3):
            want[i, c, y0:y1, x0:x1] = val[c]
    assert torch.equal(fill_box(x.clone(), boxes=boxes, value=val, backend="cpu"), want)
    assert torch.equal(fill_box(x.clone(), boxes=boxes, backend="cpu")[0], torch.zeros(3, H, W, dtype=dtype))
