"""spm_box_mass against the materialised semantic percent map in float64 (1e-12 relative:
float64 accumulation agrees to ~1e-15, float32 anywhere would miss by ~1e-7)."""


import pytest
import torch
import torch.nn.functional as F
from dali_snapmix.kernels import spm_box_mass
from kernel_helpers import SEED, rand_boxes


def _spm_oracle(cams, boxes, H, W):
    up = F.interpolate(cams[:, None].double(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    up = up - up.amin(dim=(1, 2), keepdim=True)
    spm = up / up.sum(dim=(1, 2), keepdim=True)
    return torch.stack([torch.stack([spm[b, y0:y1, x0:x1].sum() for y0, y1, x0, x1 in boxes[b].tolist()]) for b in range(len(boxes))])


@pytest.mark.parametrize("h,w,H,W", [(14, 14, 448, 448), (7, 7, 224, 224), (7, 9, 100, 61), (5, 5, 3, 4), (1, 1, 8, 8), (3, 1, 17, 9)])
def test_spm_box_mass_matches_materialised_map(g, h, w, H, W):
    B, K = 5, 3
    cams = torch.randn(B, h, w, generator=g) * 3 + 1
    cams[1] = 0.7  # constant CAM: NaN, as the reference (0 / 0)
    boxes = rand_boxes(g, B * K, H, W).view(B, K, 4)
    boxes[0, 0] = torch.tensor([0, H, 0, W])  # full image: mass 1
    boxes[2, 1] = torch.tensor([H - 1, H, W - 1, W])  # one pixel at the corner
    boxes[3, 2] = torch.tensor([0, 1, 0, W])  # border row
    got = spm_box_mass(cams, boxes, image_size=(H, W), backend="cpu")
    want = _spm_oracle(cams, boxes, H, W)
    # Constant CAM: NaN for every non-empty box. (The materialised map is usually exactly
    # constant, hence 0 / 0 = NaN; for some sizes float rounding in interpolate leaves
    # ~1e-17 noise that would be normalised into a meaningless map: the kernel says NaN.)
    nonempty = (boxes[..., 1] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 2])
    assert torch.equal(got[1].isnan(), nonempty[1]) and (got[1][~nonempty[1]] == 0).all()
    if h * w > 1:  # (a 1 x 1 CAM is always constant)
        assert not got[[0, 2, 3, 4]].isnan().any() and not want[[0, 2, 3, 4]].isnan().any()
    ok = ~got.isnan()
    # float64 accumulation agrees to ~1e-15; 1e-12 fails any float32 step (~1e-7)
    assert ((got[ok] - want[ok]).abs() <= 1e-12 * want[ok].abs() + 1e-15).all(), SEED
    if h > 1 or w > 1:
        assert got[0, 0] == pytest.approx(1.0, abs=1e-12)
    # (N, 4) boxes give (N,); no boxes give (N, 0)
    assert torch.equal(spm_box_mass(cams, boxes[:, 0], image_size=(H, W)).nan_to_num(), got[:, 0].nan_to_num())
    assert spm_box_mass(cams, boxes[:, :0], image_size=(H, W)).shape == (B, 0)


def test_spm_box_mass_minimum_is_the_upsampled_one():
    """A CAM whose minimum sits at an interior grid point that the 448-grid never
    samples exactly: shifting by the CAM's own minimum would be wrong by ~1e-2."""
    cams = torch.zeros(1, 14, 14, dtype=torch.float64)
    cams[0, 7, 7] = -5.0
    cams[0, 2, 3] = 4.0
    box = torch.tensor([[100, 300, 50, 250]])
    got = spm_box_mass(cams, box, image_size=(448, 448), backend="cpu")
    assert got.item() == pytest.approx(_spm_oracle(cams, box[:, None], 448, 448).item(), rel=1e-9)
