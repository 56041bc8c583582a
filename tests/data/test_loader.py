"""Loaders on real JPEG files: contents, DataLoader semantics, DALI vs torchvision."""

import numpy as np
import pytest
import torch
from PIL import Image

from dali_snapmix.data import DALILoader, ImageSource, TorchLoader, TransformSpec, make_loader, plan_epoch

SPEC = TransformSpec(resize=72, crop=64)


@pytest.fixture(scope="module")
def src(birds):
    return ImageSource.from_folder(birds.train_dir)


# "dali": DALI's resize + crop_mirror_normalize, the ops the GPU graph runs
@pytest.mark.parametrize("cpu_resize", ["fused", "dali"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batch_contents_match_files(src, dtype, cpu_resize):
    spec = TransformSpec(resize=72, crop=64, dtype=dtype)
    loader = DALILoader(src, batch_size=8, train=True, spec=spec, device="cpu", seed=3, cpu_resize=cpu_resize)
    b = next(iter(loader))
    assert b.images.shape == (8, 3, 64, 64) and b.images.dtype == getattr(torch, dtype)
    assert b.labels.dtype == b.indices.dtype == torch.int64 and b.flip.dtype == torch.bool
    assert b.images.device.type == "cpu"
    assert torch.equal(b.labels, torch.as_tensor(src.labels[b.indices.numpy()]))
    # each image is its file, cropped where the window says, mirrored where flip says:
    # rebuild it independently from PIL with plain float64 torch ops
    for k in range(8):
        i = int(b.indices[k])
        y0, y1, x0, x1 = b.window[k].tolist()
        with Image.open(src.paths[i]) as im:
            ref = im.convert("RGB").resize((64, 64), Image.BILINEAR, box=(x0, y0, x1, y1))
        ref = torch.from_numpy(np.asarray(ref, dtype=np.float64)).permute(2, 0, 1) / 255
        if b.flip[k]:
            ref = ref.flip(-1)
        ref = (ref - torch.tensor(SPEC.mean, dtype=torch.float64)[:, None, None]) / torch.tensor(
            SPEC.std, dtype=torch.float64
        )[:, None, None]
        err = (b.images[k].double() - ref).abs()
        # resampling filters differ slightly (DALI linear/antialias vs PIL bilinear), and
        # JPEG content is smooth but not flat: mean error well under one grey level
        assert err.mean() < 0.02, (k, err.mean())
        assert err.max() < 0.6, (k, err.max())


@pytest.mark.parametrize("cpu_resize", ["fused", "dali"])
def test_dali_matches_torchvision_fallback(src, cpu_resize):
    """Same plan, same files: DALI (ROI decode + resize) vs torchvision (resize whole
    image, crop). Tolerance, normalised units: mean |diff| < 0.01 (about 0.6 grey
    levels), max < 0.5 -- the filters differ near sharp edges (PIL's antialiased
    bilinear support vs DALI's linear filter), never in geometry."""
    for train in (True, False):
        d = DALILoader(src, batch_size=16, train=train, spec=SPEC, device="cpu", seed=1, cpu_resize=cpu_resize)
        t = TorchLoader(src, batch_size=16, train=train, spec=SPEC, device="cpu", seed=1, num_workers=0)
        assert len(d) == len(t)
        n = 0
        for bd, bt in zip(d, t):
            for name in ("labels", "indices", "window", "flip"):
                assert torch.equal(getattr(bd, name), getattr(bt, name)), name
            diff = (bd.images - bt.images).abs()
            assert diff.mean() < 0.01 and diff.max() < 0.5, (diff.mean(), diff.max())
            n += 1
        assert n == len(d)


def test_antialias_is_skipped_only_when_it_cannot_change_pixels(src, monkeypatch):
    """With DALI's resize (the GPU graph's op), the loader turns antialias off when no
    image is downscaled (a speed-up); upscaling must then give bit-identical images."""
    up = TransformSpec(resize=200, crop=96)  # 120x160 sources: every image grows
    assert DALILoader(src, batch_size=8, train=True, spec=SPEC, device="cpu")._downscales()
    auto = DALILoader(src, batch_size=8, train=True, spec=up, device="cpu", seed=5, cpu_resize="dali")
    assert not auto._downscales()
    forced = DALILoader(src, batch_size=8, train=True, spec=up, device="cpu", seed=5, cpu_resize="dali")
    monkeypatch.setattr(forced, "_downscales", lambda: True)
    for a, b in zip(auto, forced):
        assert torch.equal(a.images, b.images)


def test_epochs_cover_every_sample_once_and_reshuffle(src):
    n = len(src)  # 60
    loader = DALILoader(src, batch_size=7, train=True, spec=SPEC, device="cpu", seed=5)
    assert len(loader) == n // 7
    orders = []
    for _ in range(3):
        seen = torch.cat([b.indices for b in loader]).tolist()
        assert len(seen) == len(set(seen)) == (n // 7) * 7  # last partial batch dropped
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]
    ev = DALILoader(src, batch_size=7, train=False, spec=SPEC, device="cpu")
    sizes = [len(b) for b in ev]
    assert len(ev) == len(sizes) == 9 and sizes[-1] == n - 8 * 7  # partial batch kept
    assert sorted(torch.cat([b.indices for b in ev]).tolist()) == list(range(n))


def test_same_seed_same_order_and_crops_and_abandoned_epoch(src):
    a = DALILoader(src, batch_size=8, train=True, spec=SPEC, device="cpu", seed=11)
    b = DALILoader(src, batch_size=8, train=True, spec=SPEC, device="cpu", seed=11)
    next(iter(a))  # abandon epoch 0 after one batch
    a.set_epoch(1)
    b.set_epoch(1)
    for x, y in zip(a, b):
        assert torch.equal(x.indices, y.indices) and torch.equal(x.window, y.window)
        assert torch.equal(x.images, y.images)
    c = DALILoader(src, batch_size=8, train=True, spec=SPEC, device="cpu", seed=12)
    assert not torch.equal(next(iter(c)).indices, next(iter(b)).indices)


@pytest.mark.parametrize("world", [2, 3])
def test_shards_partition(src, world):
    n = len(src)
    for train in (True, False):
        shards = [
            torch.cat([b.indices for b in make_loader("dali", src, batch_size=4, train=train, spec=SPEC, device="cpu",
                                                      rank=r, world_size=world)]).tolist()
            for r in range(world)
        ]
        flat = sum(shards, [])
        assert len(flat) == len(set(flat))  # disjoint
        if train:
            assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
            assert len(flat) >= n - world * 4
        else:
            assert sorted(flat) == list(range(n))  # evaluation covers everything


def test_planner_windows_stay_inside_images():
    rng = np.random.default_rng()
    sizes = rng.integers(1, 900, size=(500, 2))
    for mode in ("shorter", "warp"):
        spec = TransformSpec(resize=512, crop=448, resize_mode=mode)
        for train in (True, False):
            p = plan_epoch(sizes, spec=spec, train=train, batch_size=10, seed=0, epoch=0)
            h, w = sizes[p.indices, 0], sizes[p.indices, 1]
            assert (p.window[:, 0] >= 0).all() and (p.window[:, 1] <= h + 1e-9).all()
            assert (p.window[:, 2] >= 0).all() and (p.window[:, 3] <= w + 1e-9).all()
            assert (p.rsize >= 448).all() and (p.offset >= 0).all()
            assert (p.offset + 448 <= p.rsize).all()


def test_bad_arguments_are_named(src):
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        DALILoader(src, batch_size=0, train=True, device="cpu")
    with pytest.raises(ValueError, match="device must be .* got 'tpu'"):
        DALILoader(src, batch_size=4, train=True, device="tpu")
    with pytest.raises(ValueError, match="resize must be an int >= crop"):
        TransformSpec(resize=10, crop=20)
    with pytest.raises(ValueError, match="larger than this rank's 60"):
        DALILoader(src, batch_size=61, train=True, device="cpu")
    with pytest.raises(ValueError, match="'jax'"):
        make_loader("jax", src, batch_size=4, train=True)


def test_batch_pin_memory_pins_every_tensor(monkeypatch):
    """torch's DataLoader with pin_memory=True calls ``pin_memory()`` on a batch type
    it does not know; Batch must have one that pins every field. Where CUDA exists the
    tensors come back pinned; without it (pinning needs a CUDA driver) Tensor.pin_memory
    is replaced by a recorder, and torch's own pin routine must reach all five fields."""
    from torch.utils.data._utils.pin_memory import pin_memory as torch_pin

    from dali_snapmix.data import Batch

    b = Batch(images=torch.randn(2, 3, 4, 4), labels=torch.tensor([0, 1]), indices=torch.tensor([5, 6]),
              window=torch.zeros(2, 4), flip=torch.tensor([True, False]))
    if torch.cuda.is_available():
        got = torch_pin(b)
        assert all(v.is_pinned() for v in vars(got).values())
    else:
        pinned = []

        def fake_pin(t, *a, **k):
            c = t.clone()
            pinned.append(c)
            return c

        monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
        got = torch_pin(b)
        assert len(pinned) == 5 and all(any(v is p for p in pinned) for v in vars(got).values())
    assert isinstance(got, Batch)
    for k, v in vars(b).items():
        assert torch.equal(getattr(got, k), v), k
