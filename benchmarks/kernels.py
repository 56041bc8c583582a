"""Each mixing kernel against its pure-torch reference, on one batch, interleaved.

    python benchmarks/kernels.py                  # 16 x 3 x 448 x 448 float32, CPU
    python benchmarks/kernels.py --device cuda    # CUDA events instead of perf_counter

Boxes are drawn per sample as SnapMix draws them (ratios from Beta(5, 5)). Each round
times every variant once, in a fresh random order (dali_snapmix/timing.py); medians over
the rounds are reported. "GB/s" counts the bytes a kernel must read and write (e.g. the
pasted region read once and written once); "copy GB/s" is a plain copy of the same
number of bytes (numpy on the CPU, torch on CUDA) timed in the same rounds. The last
line prints the two key speed-ups.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch
from dali_snapmix.kernels import _simd, blend, fill_box, mask_blend, paste_resized, spm_box_mass
from dali_snapmix.kernels.blend import blend_reference, mask_blend_reference
from dali_snapmix.kernels.fill_box import fill_box_reference
from dali_snapmix.kernels.paste_resized import paste_resized_reference
from dali_snapmix.kernels.spm_box_mass import spm_box_mass_reference

from dali_snapmix.mix.boxes import box_area, rand_boxes
from dali_snapmix.timing import clock, medians, shuffled_rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--cam", type=int, default=14, help="CAM side (448 / 32 for a ResNet)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(a.seed)
    B, S = a.batch, a.size
    rng = np.random.default_rng(a.seed)
    src_box = rand_boxes(rng.beta(5.0, 5.0, B), height=S, width=S, rng=rng)
    dst_box = rand_boxes(rng.beta(5.0, 5.0, B), height=S, width=S, rng=rng)
    perm = torch.randperm(B, generator=g)
    base = torch.randn(B, 3, S, S, generator=g).to(dev)
    x = base.clone()
    cams = torch.randn(B, a.cam, a.cam, generator=g).to(dev)
    boxes2 = torch.stack([dst_box, src_box], 1)  # SnapMix needs two masses per sample
    w = torch.rand(B, generator=g)
    masks = torch.rand(B, S, S, generator=g).to(dev)
    elt = x.element_size()
    paste_bytes = 2 * 3 * int(box_area(dst_box).sum()) * elt
    fill_bytes = 3 * int(box_area(dst_box).sum()) * elt

    # Each variant works in place on x; x is not restored between calls because the
    # values do not matter for timing and a restore would be timed too.
    variants = {
        ("paste_resized", "kernel"): (lambda: paste_resized(x, perm=perm, src_box=src_box, dst_box=dst_box), paste_bytes),
        ("paste_resized", "reference"): (lambda: paste_resized_reference(x, perm=perm, src_box=src_box, dst_box=dst_box), paste_bytes),
        # the scalar column gather: CPUs without AVX-512, float16, DALI_SNAPMIX_SIMD=0
        ("paste_resized", "scalar gather"): (lambda: paste_resized(x, perm=perm, src_box=src_box, dst_box=dst_box,
                                                                   simd=False), paste_bytes),
        ("spm_box_mass", "kernel"): (lambda: spm_box_mass(cams, boxes2, image_size=(S, S)), cams.numel() * 4),
        ("spm_box_mass", "reference"): (
            lambda: spm_box_mass_reference(cams, boxes2, image_size=(S, S), precision=torch.float32), cams.numel() * 4),
        ("blend", "kernel"): (lambda: blend(x, perm=perm, weights=w), 2 * x.numel() * elt),
        ("blend", "reference"): (lambda: blend_reference(x, perm=perm, weights=w), 2 * x.numel() * elt),
        ("mask_blend", "kernel"): (lambda: mask_blend(x, perm=perm, masks=masks), 2 * x.numel() * elt + masks.numel() * 4),
        ("mask_blend", "reference"): (lambda: mask_blend_reference(x, perm=perm, masks=masks), 2 * x.numel() * elt + masks.numel() * 4),
        ("fill_box", "kernel"): (lambda: fill_box(x, boxes=dst_box), fill_bytes),
        ("fill_box", "reference"): (lambda: fill_box_reference(x, boxes=dst_box, values=torch.zeros(3)), fill_bytes),
    }
    # symmetric CutMix as it runs by default: one box for the batch, the same place in the
    # partner, so a torch slice copy could do the whole batch; the faster is what it uses
    # (the paste, 2026-12-05). fill_box is torch's slice fill (faster than its Numba kernel was)
    y0, y1, x0, x1 = dst_box[0].tolist()
    one_box = dst_box[:1].expand(B, 4).contiguous()
    pd = perm.to(dev)

    def slice_copy():
        x[:, :, y0:y1, x0:x1] = x[pd, :, y0:y1, x0:x1]

    choices = {
        ("same-size paste, one box", "paste_resized kernel"): lambda: paste_resized(x, perm=perm, src_box=one_box,
                                                                                    dst_box=one_box),
        ("same-size paste, one box", "torch slice copy"): slice_copy,
    }
    copies = {}  # copy of the same byte count as each kernel moves (half read, half written)
    for (k, _), (_, nbytes) in variants.items():
        n = max(nbytes // 2 // 4, 1)
        if dev.type == "cuda":
            s, d = torch.empty(n, device=dev), torch.empty(n, device=dev)
            copies[k] = lambda s=s, d=d: d.copy_(s)
        else:
            s, d = np.random.rand(n).astype(np.float32), np.empty(n, np.float32)
            copies[k] = lambda s=s, d=d: np.copyto(d, s)

    fns = {n: (variants[n][0] if n in variants else copies[n[0]]) for n in list(variants) + [(k, "copy") for k in copies]}
    fns.update(choices)
    # 3 warm-up rounds: JIT compilation, allocator, caches
    times = shuffled_rounds(fns, rounds=a.rounds, warmup=3, seed=a.seed, measure=clock(dev.type))
    med = medians(times)

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads; "
          f"python {platform.python_version()}, torch {torch.__version__}, numba {_numba_version()}, device {dev}")
    print(f"batch {B}x3x{S}x{S} float32, per-sample boxes from Beta(5,5) (mean pasted area "
          f"{box_area(dst_box).double().mean().item() / S / S:.0%}), CAM {a.cam}x{a.cam}, {a.rounds} shuffled rounds, medians")
    print("| kernel | kernel ms | reference ms | speed-up | kernel GB/s | copy GB/s |")
    print("|---|---|---|---|---|---|")
    kernels = list(dict.fromkeys(k for k, _ in variants))
    for k in kernels:
        nbytes = variants[(k, "kernel")][1]
        tk, tr, tc = med[(k, "kernel")], med[(k, "reference")], med[(k, "copy")]
        print(f"| {k} | {tk * 1e3:.2f} | {tr * 1e3:.2f} | {tr / tk:.1f}x | {nbytes / tk / 1e9:.1f} | {nbytes / tc / 1e9:.1f} |")
    if dev.type == "cpu":
        tk, tr = med[("paste_resized", "scalar gather")], med[("paste_resized", "reference")]
        vec = "the default here" if _simd.available() else "not available on this CPU: the kernel row is this too"
        print(f"paste_resized with the scalar column gather: {tk * 1e3:.2f} ms, {tr / tk:.1f}x "
              f"(the AVX-512 vector gather is {vec})")
    print(f"one box for the batch ({(y1 - y0) * (x1 - x0) / S / S:.0%} of the image), as CutMix draws it by default:")
    for (what, how), _ in choices.items():
        print(f"  {what}: {how} {med[(what, how)] * 1e3:.2f} ms")
    print(f"paste_resized {med[('paste_resized', 'reference')] / med[('paste_resized', 'kernel')]:.2f}x "
          f"spm_box_mass {med[('spm_box_mass', 'reference')] / med[('spm_box_mass', 'kernel')]:.0f}x")


def _numba_version() -> str:
    import numba

    return numba.__version__


if __name__ == "__main__":
    main()
