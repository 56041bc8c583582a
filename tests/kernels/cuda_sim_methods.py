"""Every mixing method end to end through the CUDA kernels under Numba's CUDA simulator,
against the same method on the CPU backend with the same params: images and weights.

Run by tests/kernels/test_cuda_sim.py in its own process (the simulator must be on before
numba.cuda is imported). Tiny tensors: the simulator runs each CUDA thread as a Python
thread. SnapMix gets float64 CAMs from a small CAM head, as it computes them in training.
Exits non-zero on the first mismatch.
"""

import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dali_snapmix.mix import (  # noqa: E402
    CAMHead,
    CutMix,
    CutOut,
    FMix,
    MixedExample,
    Mixup,
    ResizeMix,
    SamplePairing,
    SmoothMix,
    SnapMix,
)


def check(name: str, cuda, cpu) -> None:
    d_img = (cuda.images.double() - cpu.images.double()).abs().max().item()
    d_w = max((cuda.w_a.double() - cpu.w_a.double()).abs().max().item(),
              (cuda.w_b.double() - cpu.w_b.double()).abs().max().item())
    same_labels = torch.equal(cuda.y_a, cpu.y_a) and torch.equal(cuda.y_b, cpu.y_b)
    # one source of per-pixel math for both targets: the same float32 operations, in the same order
    if not (d_img <= 1e-6 and d_w <= 1e-12 and same_labels):
        raise SystemExit(f"FAIL {name}: max |image diff| {d_img}, max |weight diff| {d_w}, labels equal {same_labels}")
    print(f"ok {name}: max |image diff| {d_img:.1e}, max |weight diff| {d_w:.1e}")


def main() -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    g = torch.Generator().manual_seed(seed)
    B, H, W, K = 5, 12, 12, 3
    x = torch.randn(B, 3, H, W, generator=g)
    y = torch.randint(0, K, (B,), generator=g)
    y[1] = y[0]  # a same-label pair, whatever the permutation
    torch.manual_seed(seed)
    features = torch.nn.Conv2d(3, 6, 4, stride=4)  # 12 px -> a 3x3 feature map
    head = CAMHead(features=features, classifier=torch.nn.Linear(6, K))
    methods = {
        "mixup": Mixup(prob=1.0, num_classes=K),
        "mixup per-sample": Mixup(prob=1.0, per_sample=True, num_classes=K),
        "cutmix": CutMix(num_classes=K),
        "as-cutmix per-sample": CutMix(asymmetric=True, per_sample=True, beta=1.0, num_classes=K),
        "cutout": CutOut(prob=1.0, num_classes=K),
        "resizemix": ResizeMix(num_classes=K),
        "fmix per-sample": FMix(per_sample=True, max_soft=0.1, num_classes=K),
        "smoothmix": SmoothMix(num_classes=K),
        "samplepairing": SamplePairing(num_classes=K),
        "mixed-example column-interval": MixedExample(variant="column-interval", num_classes=K),
        "snapmix released": SnapMix(cam_head=head, num_classes=K),
        "snapmix improved": SnapMix(cam_head=head, semantics="improved", beta=1.0, num_classes=K),
        "snapmix symmetric": SnapMix(cam_head=head, symmetric=True, num_classes=K),
    }
    # (SaliencyMix pastes as CutMix does; its saliency kernel has its own check in cuda_sim_checks.py)
    # one draw each (the kernels' own simulator checks run many); two for a box paste and
    # SnapMix's asymmetric boxes. Each draw costs 1-3 s here: the suite has a 5-minute budget.
    twice = {"cutmix", "snapmix released"}
    for name, mix in methods.items():
        for rep in range(2 if name in twice else 1):
            params = mix.sample(x, y, rng=np.random.default_rng([seed, rep]))
            model = torch.nn.Sequential(features)  # SnapMix takes the head it was given; the model is only passed on
            cuda = mix(x.clone(), y, params=params, model=model, backend="cuda")
            cpu = mix(x.clone(), y, params=params, model=model, backend="cpu")
            check(f"{name} #{rep}", cuda, cpu)
    print(f"all mixing methods agree between the CUDA (simulated) and CPU backends (seed {seed})")


if __name__ == "__main__":
    main()
