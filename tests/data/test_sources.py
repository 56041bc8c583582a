"""Sources: layouts, and bad input that must be named, not swallowed."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dali_snapmix.data import BadImageError, DALILoader, ImageSource, TorchLoader, TransformSpec


def _folder_with(tmp_path, birds, extra):
    root = tmp_path / "ds"
    shutil.copytree(birds.train_dir, root)
    cls = sorted(p.name for p in root.iterdir())[0]
    path = root / cls / extra[0]
    extra[1](path)
    return root, path


def test_folder_labels_match_class_folders(birds):
    src = ImageSource.from_folder(birds.train_dir)
    assert len(src) == 12 * 5 and src.num_classes == 12
    for p, lab in zip(src.paths, src.labels):
        assert p.parent.name == src.classes[lab]
    for p, (h, w) in zip(src.paths[:5], src.sizes[:5]):
        assert Image.open(p).size == (w, h)


def test_missing_empty_and_imageless_folders(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nope")):
        ImageSource.from_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders in .*empty"):
        ImageSource.from_folder(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files .*noimg"):
        ImageSource.from_folder(tmp_path / "noimg")


@pytest.mark.parametrize(
    "name,write,why",
    [
        ("zero.jpg", lambda p: p.write_bytes(b""), "empty"),
        ("text.jpg", lambda p: p.write_text("not an image at all"), "not a readable image"),
        ("cut.jpg", None, "truncated"),
    ],
)
def test_bad_files_error_or_skip(tmp_path, birds, name, write, why):
    if write is None:
        good = next(birds.train_dir.rglob("*.jpg")).read_bytes()
        write = lambda p: p.write_bytes(good[: len(good) // 2])  # noqa: E731
    root, bad = _folder_with(tmp_path, birds, (name, write))
    with pytest.raises(BadImageError, match=f"{bad.name}.*{why}|{why}.*{bad.name}"):
        ImageSource.from_folder(root)
    src = ImageSource.from_folder(root, on_bad_file="skip")
    assert len(src) == 60 and [p for p, _ in src.skipped] == [bad]
    assert bad not in src.paths


def test_file_list_and_cub_layouts(tmp_path, birds):
    ref = ImageSource.from_folder(birds.train_dir)
    rels = [p.relative_to(birds.train_dir) for p in ref.paths]
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\n" + "".join(f"{r} {lab}\n" for r, lab in zip(rels, ref.labels)))
    src = ImageSource.from_file_list(lst, root=birds.train_dir)
    assert src.paths == ref.paths and np.array_equal(src.labels, ref.labels)
    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg notanumber\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        ImageSource.from_file_list(bad, root=birds.train_dir)
    # CUB: images/, images.txt, image_class_labels.txt (1-based), train_test_split.txt
    cub = tmp_path / "CUB_200_2011"
    shutil.copytree(birds.train_dir, cub / "images")
    (cub / "images.txt").write_text("".join(f"{i + 1} {r}\n" for i, r in enumerate(rels)))
    (cub / "image_class_labels.txt").write_text("".join(f"{i + 1} {lab + 1}\n" for i, lab in enumerate(ref.labels)))
    (cub / "train_test_split.txt").write_text("".join(f"{i + 1} {int(i % 3 != 0)}\n" for i in range(len(rels))))
    tr, te = ImageSource.from_cub(cub, split="train"), ImageSource.from_cub(cub, split="test")
    assert len(tr) + len(te) == len(ref)
    assert [p.name for p in te.paths] == [p.name for p in ref.paths[::3]]
    assert np.array_equal(te.labels, ref.labels[::3])
    with pytest.raises(ValueError, match="images.txt is missing"):
        ImageSource.from_cub(tmp_path, split="train")


def test_gray_cmyk_png_and_tiny_images_come_out_rgb(tmp_path):
    """Each odd file, through both loaders, equals PIL's own RGB decoding of it rebuilt in
    float64 (36 x 36 images: the shorter-side resize to 36 is the identity, then the
    centre 32 x 32 crop and the normalisation), to float32 rounding."""
    root = tmp_path / "odd" / "c"
    root.mkdir(parents=True)
    rng = np.random.default_rng()
    rgb = Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8))
    rgb.convert("L").save(root / "gray.jpg")
    rgb.convert("CMYK").save(root / "cmyk.jpg")
    rgb.save(root / "color.png")
    rgb.resize((7, 5)).save(root / "tiny.jpg")  # far smaller than the crop: upscaled
    src = ImageSource.from_folder(tmp_path / "odd")
    spec = TransformSpec(resize=36, crop=32)
    mean = torch.tensor(spec.mean, dtype=torch.float64)[:, None, None]
    std = torch.tensor(spec.std, dtype=torch.float64)[:, None, None]
    for cls in (DALILoader, TorchLoader):
        (b,) = list(cls(src, batch_size=4, train=False, spec=spec, device="cpu"))
        assert b.images.shape == (4, 3, 32, 32) and torch.isfinite(b.images).all()
        for i, path in enumerate(src.paths):
            if path.name == "tiny.jpg":
                continue
            pil = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255
            want = (torch.from_numpy(pil).permute(2, 0, 1)[:, 2:34, 2:34] - mean) / std
            err = ((b.images[i].double() - want) * std).abs().max().item()  # in [0, 1] pixel units
            assert err < 5e-7, (cls.__name__, path.name, err)


def test_an_empty_class_folder_is_an_error_unless_allowed(tmp_path, birds):
    """c0/ with an image and an empty c1/: two classes were meant, one exists."""
    import shutil

    (tmp_path / "c0").mkdir()
    (tmp_path / "c1").mkdir()
    shutil.copy(next(birds.train_dir.rglob("*.jpg")), tmp_path / "c0" / "a.jpg")
    with pytest.raises(ValueError, match=r"class folders without image files .* \['c1'\]; .*allow_empty=True"):
        ImageSource.from_folder(tmp_path)
    src = ImageSource.from_folder(tmp_path, allow_empty=True)
    assert src.classes == ("c0", "c1") and len(src) == 1 and src.labels.tolist() == [0]
