"""The embedded set's ground truth: part masks, and their mapping into a sample's crop."""

import numpy as np
import pytest
import torch
from PIL import Image

from dali_snapmix.data import DALILoader, ImageSource, TransformSpec, plan_epoch
from dali_snapmix.data.spec import map_to_crop
from dali_snapmix.data.synthetic import (
    CLASS_NAMES,
    FORMAT_VERSION,
    HEAD_MARKS,
    WING_BARS,
    load_part_mask,
    part_mask_path,
    render_bird,
)


def test_every_image_has_its_part_mask_drawn_from_the_same_seed(birds):
    assert f"birds-v{FORMAT_VERSION}-" in birds.root.name and FORMAT_VERSION >= 2  # older caches are rebuilt
    src = ImageSource.from_folder(birds.test_dir)
    for path in src.paths:
        m = birds.part_mask(path)
        with Image.open(path) as im:
            assert m.shape == (im.height, im.width)
        # the generator's own stream for this file, drawn again: same image, same mask
        label, i = CLASS_NAMES.index(path.parent.name), int(path.stem.rsplit("_", 1)[1])  # generator's label
        img, parts = render_bird(np.random.default_rng([birds.seed, 1, label, i]), label=label, size=(120, 160),
                                 with_parts=True)
        assert np.array_equal(np.asarray(parts, dtype=bool), m)
        assert 0 < m.mean() < 0.1  # two small parts


def test_part_pixels_show_the_wing_bar_or_the_head_mark(birds):
    """Inside the mask the JPEG shows the class's bar colour or the mark's near-black;
    a 3-pixel-eroded mask keeps away from the antialiased edges and JPEG ringing."""
    src = ImageSource.from_folder(birds.train_dir)
    for path in src.paths[::3]:
        label = CLASS_NAMES.index(path.parent.name)  # the generator's numbering, not the sorted folders'
        bar = np.array(list(WING_BARS.values())[label // len(HEAD_MARKS)], dtype=np.float64)
        m = torch.from_numpy(birds.part_mask(path))[None, None].float()
        core = (-torch.nn.functional.max_pool2d(-m, 3, 1, 1))[0, 0].numpy() > 0.5
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)[core]
        near = (np.linalg.norm(rgb - bar, axis=1) < 60) | (np.linalg.norm(rgb - 20.0, axis=1) < 60)
        assert near.mean() > 0.9, (path, near.mean())


def test_every_wing_bar_pixel_is_in_the_mask(birds):
    """The other way round, from the JPEG's own pixels: the bar-coloured pixels connected
    to the mask (grown through bar colour, 8-neighbours) stay within one pixel of it
    (the antialiased edge), so a mask that missed part of the bar fails (a mask without
    the right half of its bar failed on all 60 images). The wing bar
    lies inside the dark wing with a margin of >= 2 px at the set's smallest birds, so
    the growth cannot leak into clutter of the same colour. (The head mark cannot be
    checked so: the cap and the crest border the background, whose gradient may be as
    dark as the mark; the next test checks it by geometry.)"""
    src = ImageSource.from_folder(birds.train_dir)
    pool = torch.nn.functional.max_pool2d
    for path in src.paths:
        label = CLASS_NAMES.index(path.parent.name)
        bar = np.array(list(WING_BARS.values())[label // len(HEAD_MARKS)], dtype=np.float64)
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        # 80: JPEG's halved chroma pulls a 2-px blue bar on a dark wing up to 66 away from
        # its colour; at 100 the growth starts to cross the wing's margin (measured on this set)
        coloured = torch.from_numpy(np.linalg.norm(rgb - bar, axis=2) < 80)[None, None].float()
        m = torch.from_numpy(birds.part_mask(path))[None, None].float()
        region = m * coloured
        while True:  # flood fill from the mask's bar-coloured pixels through bar colour
            grown = pool(region, 3, 1, 1) * coloured
            if torch.equal(grown, region):
                break
            region = grown
        near = pool(m, 3, 1, 1)  # the mask and its 1-pixel border
        outside = int((region * (1 - near)).sum())
        assert outside == 0, (path, outside, int(region.sum()))
        assert region.sum() >= 5, (path, int(region.sum()))  # the fill started (9 px at the least here)


@pytest.mark.parametrize("label", range(len(CLASS_NAMES)))
def test_the_mask_is_where_the_parts_are_painted_both_ways(label):
    """Both parts, the head mark included, checked against the pixels they paint: the same
    bird drawn again from the same stream without its parts (``draw_parts=False``) differs
    from the image exactly where the bar and the mark were painted. Every clearly painted
    pixel (any channel moved by >= 20 of 255) lies in the mask or on its 1-pixel border
    (the rotation's bilinear edge), and every pixel of the 1-pixel-eroded mask is clearly
    painted. Colour cannot tell the mark from a dark background; the geometry can. At the
    set's size (300 x 400) on 10 birds per class, a mask missing the right half of its mark,
    or missing the mark, or grown by 2 px failed on every bird; at 120 x 160 a 1-px eyestripe
    is too thin for the 1-pixel border to tell, so the test draws at the set's size."""
    pool = torch.nn.functional.max_pool2d
    for i in range(2):
        stream = [0, 0, label, i]  # the train split's stream of ensure_synthetic_birds(seed=0)
        img, parts = render_bird(np.random.default_rng(stream), label=label, size=(300, 400), with_parts=True)
        bare = render_bird(np.random.default_rng(stream), label=label, size=(300, 400), draw_parts=False)
        painted = np.abs(np.asarray(img, dtype=np.float64) - np.asarray(bare, dtype=np.float64)).max(axis=2) >= 20
        m = torch.from_numpy(np.array(parts, dtype=bool))[None, None].float()
        near = pool(m, 3, 1, 1)[0, 0].numpy() > 0
        core = (-pool(-m, 3, 1, 1))[0, 0].numpy() > 0
        assert not (painted & ~near).any(), (label, i, int((painted & ~near).sum()))
        assert not (core & ~painted).any(), (label, i, int((core & ~painted).sum()))
        assert core.sum() >= 20, (label, i, int(core.sum()))  # both parts are there to check


def test_part_mask_errors_name_the_file(birds, tmp_path):
    with pytest.raises(ValueError, match="no part mask at .*nothing.png"):
        load_part_mask(tmp_path / "nothing.png")
    with pytest.raises(ValueError, match="is not an image of the set"):
        part_mask_path(tmp_path / "x.jpg", root=birds.root)
    assert len(CLASS_NAMES) == 12


@pytest.mark.parametrize("hw, resize, crop", [((300, 400), 146, 128), ((120, 160), 40, 32), ((50, 61), 100, 90),
                                              ((333, 250), 512, 448), ((64, 64), 64, 64)])
def test_map_to_crop_equals_resizing_cropping_and_flipping_the_mask_image(hw, resize, crop):
    """Against PIL: resize the whole mask image (antialiased bilinear), crop it at the
    plan's offset, mirror it; the windows come from the loader's own plan."""
    rng = np.random.default_rng(hash(hw) % 2**32)
    h, w = hw
    mask = rng.random((h, w)) < 0.1
    plan = plan_epoch(np.array([[h, w]] * 12), spec=TransformSpec(resize=resize, crop=crop), train=True,
                      batch_size=12, seed=int(rng.integers(1000)), epoch=0)
    assert plan.flip.any() and not plan.flip.all()
    for k in range(12):
        got = map_to_crop(mask, window=plan.window[k].astype(np.float32), flip=bool(plan.flip[k]), crop=crop)
        (rh, rw), (oy, ox) = plan.rsize[k], plan.offset[k]
        ref = Image.fromarray(mask.astype(np.float32), "F").resize((int(rw), int(rh)), Image.Resampling.BILINEAR)
        ref = ref.crop((int(ox), int(oy), int(ox) + crop, int(oy) + crop))
        if plan.flip[k]:
            ref = ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        assert got.dtype == torch.float64 and got.shape == (crop, crop)
        np.testing.assert_allclose(got.numpy(), np.asarray(ref, dtype=np.float64), rtol=0, atol=1e-6)


def test_map_to_crop_follows_the_loaders_batches(birds):
    """The windows and flips a DALI batch reports put the mask on the parts the crop shows:
    the same mapping applied to the image file reproduces the batch's pixels."""
    src = ImageSource.from_folder(birds.train_dir)
    spec = TransformSpec(resize=72, crop=64)
    b = next(iter(DALILoader(src, batch_size=8, train=True, spec=spec, device="cpu", seed=5)))
    assert b.flip.any()
    for k in range(8):
        rgb = np.asarray(Image.open(src.paths[int(b.indices[k])]).convert("RGB"), dtype=np.float64) / 255
        chans = [map_to_crop(rgb[..., c], window=b.window[k].numpy(), flip=bool(b.flip[k]), crop=64) for c in range(3)]
        ref = (torch.stack(chans) - torch.tensor(spec.mean, dtype=torch.float64)[:, None, None]) / torch.tensor(
            spec.std, dtype=torch.float64)[:, None, None]
        # the loader's fused filter differs from PIL's near sharp edges (test_loader.py): mean and max bounds
        d = (b.images[k].double() - ref).abs()
        assert d.mean() < 0.02 and d.max() < 0.6, (k, d.mean(), d.max())


def test_map_to_crop_rejects_what_is_not_a_crop():
    m = np.zeros((30, 40), dtype=bool)
    with pytest.raises(ValueError, match=r"window \(0.0, 50.0"):
        map_to_crop(m, window=(0, 50, 0, 40), flip=False, crop=16)
    with pytest.raises(ValueError, match="non-empty"):
        map_to_crop(np.zeros((0, 4)), window=(0, 1, 0, 1), flip=False, crop=1)
