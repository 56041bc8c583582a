"""fill_box (torch's slice fill, one fill for a batch-wide box) against an element-wise
definition: per sample and channel, every pixel inside the box set, nothing else touched."""

import pytest
import torch
from dali_snapmix.kernels import fill_box
from kernel_helpers import rand_boxes


def _want(x, boxes, val):
    want = x.clone()
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        for c in range(x.shape[1]):
            want[i, c, y0:y1, x0:x1] = val[c]
    return want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shared", [False, True], ids=["box per sample", "one box for the batch"])
def test_fill_box(g, dtype, shared):
    B, H, W = 9, 15, 17
    x = torch.randn(B, 3, H, W, generator=g).to(dtype)
    boxes = rand_boxes(g, B, H, W)
    boxes[0] = torch.tensor([0, H, 0, W])
    boxes[1] = torch.tensor([H - 1, H, 0, 1])
    if shared:
        boxes = boxes[2:3].expand(B, 4).contiguous()
    val = (0.25, -1.5, 3.0)
    assert torch.equal(fill_box(x.clone(), boxes=boxes, value=val, backend="cpu"), _want(x, boxes, val))
    assert torch.equal(fill_box(x.clone(), boxes=boxes, backend="cpu"), _want(x, boxes, (0.0, 0.0, 0.0)))


def test_fill_box_batch_of_one_and_empty_box(g):
    x = torch.randn(1, 3, 4, 5, generator=g)
    assert torch.equal(fill_box(x.clone(), boxes=torch.tensor([[2, 2, 0, 5]]), value=7.0), x)
    assert torch.equal(fill_box(x.clone(), boxes=torch.tensor([[0, 4, 0, 5]]), value=7.0), torch.full_like(x, 7.0))
