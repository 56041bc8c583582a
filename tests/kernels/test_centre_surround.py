"""centre_surround (the fine-grained saliency's sums and merge): the CPU kernel against the
torch reference beside it, bit for bit, on random levels of many shapes and scales; its
bad inputs. (Both against OpenCV's own detector: tests/mix/test_saliency.py.)"""

import pytest
import torch
import torch.nn.functional as F
from dali_snapmix.kernels import centre_surround
from dali_snapmix.kernels.centre_surround import centre_surround_reference

OPENCV = (12, 24, 48, 28, 56, 112)


def inputs(g, n, h, w, *, flat=False):
    grey = torch.full((n, h, w), 7.0) if flat else torch.randint(0, 256, (n, h, w), generator=g).float()
    integral = F.pad(grey, (1, 0, 1, 0)).cumsum(1, dtype=torch.float64).cumsum(2).float()
    return integral, grey


@pytest.mark.parametrize("n,h,w", [(1, 2, 2), (3, 2, 300), (2, 300, 2), (5, 37, 53), (2, 130, 250), (1, 240, 240)])
@pytest.mark.parametrize("scales", [OPENCV, (1,), (3, 1, 500)])
def test_kernel_equals_the_reference(g, n, h, w, scales):
    integral, grey = inputs(g, n, h, w)
    grey[0, 0, : min(w, 5)] = 255  # a bright run at the border: scaled maps over 255 wrap here
    integral = F.pad(grey, (1, 0, 1, 0)).cumsum(1, dtype=torch.float64).cumsum(2).float()
    got = centre_surround(integral, grey, scales=scales, backend="cpu")
    want = centre_surround_reference(integral, grey, scales=scales)
    assert got.dtype == torch.int32 and torch.equal(got, want), (n, h, w, scales)
    assert 0 <= int(got.min()) and int(got.max()) <= 255


def test_flat_images_give_zero_and_leave_their_neighbours_alone(g):
    integral, grey = inputs(g, 3, 20, 30)
    flat_i, flat_g = inputs(g, 1, 20, 30, flat=True)
    grey[1], integral[1] = flat_g[0], flat_i[0]
    got = centre_surround(integral, grey, scales=OPENCV, backend="cpu")
    assert torch.equal(got, centre_surround_reference(integral, grey, scales=OPENCV))
    assert int(got[1].abs().max()) == 0 and int(got[0].max()) > 0 and int(got[2].max()) > 0
    alone = centre_surround(integral[2:].contiguous(), grey[2:].contiguous(), scales=OPENCV, backend="cpu")
    assert torch.equal(got[2], alone[0])  # each image's maxima its own


def test_bad_inputs_are_refused(g):
    integral, grey = inputs(g, 2, 8, 9)
    with pytest.raises(ValueError, match="grey must be a contiguous float32"):
        centre_surround(integral, grey.to(torch.int32), scales=OPENCV)
    with pytest.raises(ValueError, match=r"float32 \(2, 9, 10\) tensor .* got torch.float32 of shape \(2, 8, 9\)"):
        centre_surround(integral[:, 1:, 1:].contiguous(), grey, scales=OPENCV)
    with pytest.raises(ValueError, match=r"scales must be .* got \(3, 0\)"):
        centre_surround(integral, grey, scales=(3, 0))
    with pytest.raises(ValueError, match="1 x 9"):
        centre_surround(integral[:, :2].contiguous(), grey[:, :1].contiguous(), scales=OPENCV)
