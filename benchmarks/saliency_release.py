"""What SaliencyMix's release computes as "the saliency": OpenCV's fine-grained detector
given the normalised float32 tensor (HWC), as the release's ``saliency_bbox`` calls it,
against the detector on the same image's 8-bit levels, as the paper describes.

    python benchmarks/saliency_release.py          # matplotlib's photograph + 12 embedded birds, 224 x 224

Per image: the Pearson correlation of the two maps and both peaks (the box centres). The
detector reads its grey image as 8-bit (``gray.at<uchar>`` in OpenCV's source) whatever
the input's type, so a float32 image's bytes are read as levels. Needs
opencv-contrib-python-headless (the dev extra).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from dali_snapmix.data import ensure_synthetic_birds
from dali_snapmix.data.spec import IMAGENET_MEAN, IMAGENET_STD


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--birds", type=int, default=12, help="embedded test images (every 30th)")
    a = ap.parse_args(argv)
    import cv2
    from matplotlib import cbook

    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    paths = [("grace_hopper.jpg", cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]
    if a.birds:
        birds = ensure_synthetic_birds(train_per_class=100, test_per_class=30)
        paths += [(p.name, p) for p in sorted((birds.root / "test").rglob("*.jpg"))[::30][: a.birds]]
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    rows = []
    print("| image | correlation of the maps | peak, 8-bit image (paper) | peak, normalised float32 (release) |")
    print("|---|---|---|---|")
    for name, path in paths:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB").resize((a.size, a.size), Image.BILINEAR))
        _, paper = detector.computeSaliency(np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV's BGR
        # the release: ToTensor + Normalize, CHW -> HWC, straight to the detector (RGB, float32)
        _, release = detector.computeSaliency(np.ascontiguousarray((rgb / np.float32(255) - mean) / std, np.float32))
        p8, pf = ((m * 255).astype(np.uint8) for m in (paper, release))
        peak8, peakf = (tuple(int(v) for v in np.unravel_index(m.argmax(), m.shape)) for m in (p8, pf))
        r = float(np.corrcoef(p8.ravel().astype(float), pf.ravel().astype(float))[0, 1])
        rows.append({"image": name, "correlation": r, "peak_paper": peak8, "peak_release": peakf})
        print(f"| {name} | {r:+.3f} | {peak8} | {peakf} |")
    cs = [r["correlation"] for r in rows]
    print(f"correlation over {len(rows)} images: median {np.median(cs):+.3f}, range {min(cs):+.3f} .. {max(cs):+.3f}; "
          f"same peak in {sum(r['peak_paper'] == r['peak_release'] for r in rows)} of {len(rows)}")
    return rows


if __name__ == "__main__":
    main()
