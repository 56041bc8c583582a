"""The batched fine-grained saliency against OpenCV-contrib's own detector, on a real
photograph (matplotlib's sample image) and on random images, and its bad inputs."""

import numpy as np
import pytest
import torch
from mix_helpers import SEED

from dali_snapmix.mix.saliency import fine_grained_saliency, to_levels

cv2 = pytest.importorskip("cv2", reason="opencv-contrib-python-headless (the dev extra) is the reference")


def opencv_map(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's map of one HxWx3 uint8 RGB image (given to it as BGR, as it expects), in
    levels 0..255 (recent versions return them / 255 as float32)."""
    ok, m = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    return m.astype(np.int64) if m.dtype == np.uint8 else np.rint(m.astype(np.float64) * 255).astype(np.int64)


def ours(rgb: np.ndarray, backend: str = "auto") -> np.ndarray:
    levels = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].to(torch.int32)
    return fine_grained_saliency(levels, backend=backend)[0].numpy()


@pytest.fixture(scope="module")
def photo():
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB"))  # 600 x 512


def test_equals_opencv_bit_for_bit_on_a_photograph(photo):
    from PIL import Image

    # grey sums below 2^24, where OpenCV's float32 integral image is exact
    for img in (np.asarray(Image.fromarray(photo).resize((224, 224), Image.BILINEAR)), photo[100:300, 50:350],
                photo[:97, :31]):
        want = opencv_map(img)
        assert 0 < want.max() and np.array_equal(ours(img), want), img.shape
        assert np.array_equal(ours(img, "reference"), want), img.shape  # the kernel's torch reference too


def test_full_size_photograph_within_opencvs_float32_rounding(photo):
    """600 x 512: OpenCV's integral image outgrows float32's integers and rounds as it
    accumulates; ours rounds once. A few pixels in a thousand may differ, by one level;
    the peak SaliencyMix takes is the same."""
    got, want = ours(photo), opencv_map(photo)
    diff = np.abs(got - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, ((diff > 0).sum(), diff.max())
    assert got.argmax() == want.argmax()


@pytest.mark.parametrize("h,w", [(2, 2), (2, 3), (37, 53), (64, 40)])
def test_equals_opencv_on_random_images_and_tiny_ones(h, w):
    rng = np.random.default_rng(SEED)
    imgs = [(rng.random((h, w, 3)) * 256).astype(np.uint8), np.full((h, w, 3), 7, np.uint8)]  # noise; flat (0/0)
    for img in imgs:
        assert np.array_equal(ours(img), opencv_map(img)), (SEED, h, w)
        assert np.array_equal(ours(img, "reference"), opencv_map(img)), (SEED, h, w)
    batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).to(torch.int32)
    assert np.array_equal(fine_grained_saliency(batch)[0].numpy(), opencv_map(imgs[0]))  # batched = one by one


def test_values_over_255_wrap_as_opencvs_cast():
    """A bright disc in a faint ring: at a few pixels on + off exceed their maximum and
    OpenCV's cast to 8 bits wraps (this image, seed 2, has two such pixels: a map that
    saturated at 255 instead differs from OpenCV's there)."""
    yy, xx = np.mgrid[:120, :120]
    r = np.hypot(yy - 61, xx - 71)
    img = np.zeros((120, 120, 3), np.int64)
    img[(r > 11.7) & (r < 47.6)] = 16
    img[r <= 11.7] = 141
    img = np.clip(img + np.random.default_rng(2).integers(-5, 5, img.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(ours(img), opencv_map(img))
    assert np.array_equal(ours(img, "reference"), opencv_map(img))


def test_channel_order_and_grey_input():
    rng = np.random.default_rng(SEED)
    img = (rng.random((30, 41, 3)) * 256).astype(np.uint8)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].to(torch.int32)
    # the release hands OpenCV RGB as if BGR: "bgr" on a reversed batch is OpenCV on the RGB array
    assert np.array_equal(fine_grained_saliency(t.flip(1), channels="bgr")[0].numpy(), opencv_map(img))
    grey = cv2.cvtColor(np.ascontiguousarray(img[..., ::-1]), cv2.COLOR_BGR2GRAY)
    g = torch.from_numpy(grey)[None, None].to(torch.int32)
    ok, m = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(grey)
    assert np.array_equal(fine_grained_saliency(g)[0].numpy(), np.rint(m * 255).astype(np.int64))


def test_to_levels_inverts_the_normalisation():
    rng = np.random.default_rng(SEED)
    levels = torch.from_numpy(rng.integers(0, 256, (3, 3, 9, 11))).float()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = (levels / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(to_levels(x.float(), mean=mean, std=std), levels)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="torch.bool"):
        fine_grained_saliency(torch.zeros(1, 3, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 2, 8, 8\)"):
        fine_grained_saliency(torch.zeros(2, 2, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="1 x 8"):
        fine_grained_saliency(torch.zeros(1, 3, 1, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="'hsv'"):
        fine_grained_saliency(torch.zeros(1, 3, 8, 8, dtype=torch.int32), channels="hsv")
