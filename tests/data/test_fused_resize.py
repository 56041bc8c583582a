"""The fused CPU resize against independent references: DALI's own resize +
crop_mirror_normalize (what it replaces) and float64 torch interpolation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dali_snapmix.data import DALILoader, ImageSource, TransformSpec
from dali_snapmix.data.fused_resize import resize_normalize_into

MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255
LEVEL = 1 / STD.min()  # one 8-bit level in normalised units


def _fused(img, roi_start, roi_end, flip, crop):
    """The unrounded pass (``round8=False``): the filter itself, free of rounding ties."""
    out = np.full((3, crop, crop), np.nan, np.float32)  # poisoned: every pixel must be written
    resize_normalize_into(out, img, np.asarray(roi_start, np.float32), np.asarray(roi_end, np.float32), flip,
                          MEAN.astype(np.float32), (1 / STD).astype(np.float32), False)
    assert not np.isnan(out).any()
    return out


def _check(ours, ref):
    """Float32 accumulation error only (up to 400 taps, summed in another order than
    DALI's): 4e-3 of an 8-bit level; measured <= 1.1e-3 over 2400 random cases. A
    tenth of a pixel's shift or a wrong filter width gives whole levels."""
    d = np.abs(ours.astype(np.float64) - ref) / LEVEL
    assert d.max() <= 4e-3, d.max()


def _random_cases(rng, n):
    cases = []
    for k in range(n):
        h, w = [(1, 40), (37, 1), (50, 70), (200, 150), (9, 9)][k % 5]
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if k % 3 == 0:  # the whole image, borders included
            rs, re = [0.0, 0.0], [float(h), float(w)]
        else:  # a random sub-pixel window, sometimes touching a border
            y0, x0 = rng.uniform(0, h * 0.5), rng.uniform(0, w * 0.5)
            y1 = h if k % 4 == 1 else rng.uniform(y0 + 0.25, h)
            x1 = w if k % 4 == 2 else rng.uniform(x0 + 0.25, w)
            rs, re = [y0, x0], [y1, x1]
        cases.append((img, rs, re, bool(k % 2)))
    return cases


def _dali_float_resize(cases, crop):
    """DALI's resize (antialias on, output float: no rounding ties) + crop_mirror_normalize."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    columns = ([c[0] for c in cases], [np.float32(c[1]) for c in cases], [np.float32(c[2]) for c in cases],
               [np.int32(c[3]) for c in cases])

    @pipeline_def(batch_size=len(cases), num_threads=1, device_id=None)
    def pipe():
        img, rs, re, flip = fn.external_source(source=lambda: columns, num_outputs=4, layout=["HWC", "", "", ""])
        r = fn.resize(img, roi_start=rs, roi_end=re, size=[crop, crop], interp_type=types.INTERP_LINEAR,
                      antialias=True, dtype=types.FLOAT)
        return fn.crop_mirror_normalize(r, mirror=flip, mean=MEAN.tolist(), std=STD.tolist(), output_layout="CHW")

    p = pipe()
    p.build()
    (out,) = p.run()
    return [np.asarray(out[k]) for k in range(len(cases))]


def test_matches_dali_resize_and_crop_mirror_normalize_on_noise():
    """Random noise images, random windows (sub-pixel, full, border), both flips,
    up- and downscaling by up to 200x, 1-pixel-wide images: against the DALI graph
    it replaces. Noise makes every filter error visible."""
    rng = np.random.default_rng()
    for crop in (1, 24):
        cases = _random_cases(rng, 20)
        for (img, rs, re, flip), ref in zip(cases, _dali_float_resize(cases, crop)):
            _check(_fused(img, rs, re, flip, crop), ref)


@pytest.mark.parametrize("h,w,crop", [(50, 70, 96), (200, 150, 40), (1, 33, 8), (9, 9, 9)])
def test_matches_torch_interpolate_float64(h, w, crop):
    """Whole-image ROI against float64 ``F.interpolate(bilinear, align_corners=False)``
    (antialiased, like DALI): torch renormalises the taps at the borders when
    downscaling where DALI repeats the edge pixel, so the downscaled border rows and
    columns (within one filter radius) are left out of the comparison."""
    img = np.random.default_rng().integers(0, 256, (h, w, 3), dtype=np.uint8)
    for flip in (False, True):
        ours = _fused(img, [0, 0], [h, w], flip, crop)
        t = torch.from_numpy(img).permute(2, 0, 1)[None].double()
        ref = F.interpolate(t, size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)[0]
        if flip:
            ref = ref.flip(-1)
        ref = ((ref - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]).numpy()
        my = int(np.ceil(crop / h)) if h > crop else 0  # output pixels within one radius of the edge
        mx = int(np.ceil(crop / w)) if w > crop else 0
        sl = np.s_[:, my: crop - my or None, mx: crop - mx or None]
        _check(ours[sl], ref[sl])


@pytest.fixture(scope="module")
def src(birds):
    return ImageSource.from_folder(birds.train_dir)


@pytest.mark.parametrize("spec", [TransformSpec(resize=72, crop=64), TransformSpec(resize=200, crop=96),
                                  TransformSpec(resize=72, crop=64, dtype="float16")],
                         ids=["down", "up", "float16"])
def test_loader_fused_equals_dali_ops(src, spec):
    """Whole loader on real JPEGs, training (random crops, flips) and evaluation:
    the fused pass and DALI's ops give the same batches up to one 8-bit level, on
    rounding ties only (measured: 0.003-0.3 % of values)."""
    for train in (True, False):
        a = DALILoader(src, batch_size=16, train=train, spec=spec, device="cpu", seed=4)
        b = DALILoader(src, batch_size=16, train=train, spec=spec, device="cpu", seed=4, cpu_resize="dali")
        n = 0
        for x, y in zip(a, b):
            assert x.images.dtype == y.images.dtype == getattr(torch, spec.dtype)
            assert torch.equal(x.flip, y.flip) and torch.equal(x.indices, y.indices)
            half = 0.01 if spec.dtype == "float16" else 0  # float16 output rounding
            d = (x.images.double() - y.images.double()).abs()
            assert d.max() <= LEVEL * 1.001 + half, d.max()
            assert (d > 1e-4 + half).double().mean() < 0.01
            n += 1
        assert n == len(a) > 0


def test_cpu_resize_is_checked(src):
    with pytest.raises(ValueError, match="cpu_resize.*'numba'"):
        DALILoader(src, batch_size=4, train=True, device="cpu", cpu_resize="numba")
