"""Every mixing method end to end with CUDA tensors against the CPU backend on the same
params; SnapMix's autocast and channels_last CAM passes; the CAM cache on CUDA.

Skipped without CUDA (make gpu-check runs it on a GPU machine)."""

import copy

import numpy as np
import pytest
import torch

from dali_snapmix.data.spec import CropGeometry
from dali_snapmix.mix import (
    RICAP,
    AttentiveMix,
    CAMCache,
    CutMix,
    CutOut,
    FMix,
    GuidedMixup,
    MixedExample,
    Mixup,
    ResizeMix,
    SaliencyMix,
    SamplePairing,
    SmoothMix,
    SnapMix,
)
from dali_snapmix.models import SmallCNN

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: tests/gpu/ runs on a GPU "
                                "machine (make gpu-check)")
K = 5


def _batch(n=9, side=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, side, side, generator=g)
    y = torch.randint(0, K, (n,), generator=g)
    y[1] = y[0]
    return x, y


def _models():
    torch.manual_seed(0)
    cpu = SmallCNN(K).train()
    return cpu, copy.deepcopy(cpu).cuda()


METHODS = {
    "mixup": lambda: Mixup(prob=1.0, num_classes=K),
    "mixup per-sample": lambda: Mixup(prob=1.0, per_sample=True, num_classes=K),
    "cutmix": lambda: CutMix(num_classes=K),
    "as-cutmix": lambda: CutMix(asymmetric=True, num_classes=K),
    "cutout": lambda: CutOut(prob=1.0, num_classes=K),
    "snapmix": lambda: SnapMix(num_classes=K),
    "snapmix improved": lambda: SnapMix(semantics="improved", num_classes=K),
    "snapmix lowres": lambda: SnapMix(cam_resolution=0.5, num_classes=K),
    "resizemix": lambda: ResizeMix(num_classes=K),
    "ricap": lambda: RICAP(num_classes=K),
    "fmix per-sample": lambda: FMix(per_sample=True, num_classes=K),
    "smoothmix": lambda: SmoothMix(num_classes=K),
    "samplepairing": lambda: SamplePairing(num_classes=K),
    "saliencymix": lambda: SaliencyMix(num_classes=K),
    "guided-sr": lambda: GuidedMixup(prob=1.0, num_classes=K),
    "guided-ap random": lambda: GuidedMixup(variant="ap", prob=1.0, pairing="random", num_classes=K),
    "attentivemix": lambda: AttentiveMix(k=5, grid=4, num_classes=K),
    "mixed-example pixels": lambda: MixedExample(variant="random-pixels", num_classes=K),
    "mixed-example elements": lambda: MixedExample(variant="random-elements", num_classes=K),
    "mixed-example column-interval": lambda: MixedExample(variant="column-interval", num_classes=K),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_method_on_cuda_equals_cpu(name):
    x, y = _batch()
    m_cpu, m_gpu = _models()
    mix = METHODS[name]()
    for rep in range(3):
        params = mix.sample(x, y, rng=np.random.default_rng(rep))
        # the CAM pass (train mode) moves BatchNorm statistics: give both devices the same start
        m_gpu.load_state_dict(m_cpu.state_dict())
        cpu = mix(x.clone(), y, params=params, model=m_cpu)
        gpu = mix(x.cuda(), y.cuda(), params=params, model=m_gpu)
        assert gpu.images.is_cuda and gpu.weights.is_cuda
        assert torch.equal(gpu.labels.cpu(), cpu.labels)  # K columns: 2, or RICAP's 4
        torch.testing.assert_close(gpu.images.cpu(), cpu.images, rtol=0, atol=1e-5)
        # SnapMix's weights come from each device's own conv: cuDNN against oneDNN in float32
        tol = 1e-4 if name.startswith("snapmix") else 1e-6
        torch.testing.assert_close(gpu.weights.cpu(), cpu.weights, rtol=0, atol=tol)


def test_snapmix_autocast_and_channels_last_cam_passes():
    """bf16 autocast runs the CAM forward in bfloat16 (seen by a hook) and keeps the
    weights near the float32 ones; channels_last changes the layout, not the weights."""
    x, y = _batch(seed=3)
    _, model = _models()
    seen = []
    h = model.features.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    runs = {}
    for name, opts in {"fp32": {}, "bf16": {"autocast": True}, "cl": {"channels_last": True}}.items():
        mix = SnapMix(num_classes=K, **opts)
        params = mix.sample(x, y, rng=np.random.default_rng(0))
        state = copy.deepcopy(model.state_dict())
        runs[name] = mix(x.cuda(), y.cuda(), params=params, model=model)
        model.load_state_dict(state)
    h.remove()
    assert seen == [torch.float32, torch.bfloat16, torch.float32]
    for w in ("w_a", "w_b"):
        torch.testing.assert_close(getattr(runs["cl"], w), getattr(runs["fp32"], w), rtol=0, atol=1e-4)
        assert (getattr(runs["bf16"], w) - getattr(runs["fp32"], w)).abs().max() < 0.05


def test_cam_cache_on_cuda_equals_cpu():
    g = torch.Generator().manual_seed(5)
    n = 6
    cam = torch.randn(n, 4, 4, generator=g, dtype=torch.float64)
    win = torch.tensor([[0, 64, 0, 64], [10, 74, 5, 69], [0, 50, 0, 50], [3, 40, 3, 40], [0, 80, 20, 100],
                        [5, 69, 5, 69]], dtype=torch.float32)
    flip = torch.tensor([False, True, False, True, True, False])
    new_win = win + torch.tensor([4.0, 4.0, -2.0, -2.0])
    caches = {d: CAMCache(size=10, device=d) for d in ("cpu", "cuda")}
    idx = torch.tensor([0, 2, 4, 6, 8, 9])
    out = {}
    for d, c in caches.items():
        c.store(idx, cam.to(d), win, flip, epoch=0)
        out[d] = c.project(idx, new_win, ~flip)
        assert out[d].device.type == d
        assert bool(c.fresh(idx, 1).all()) and not bool(c.fresh(torch.tensor([1]), 1).any())
    torch.testing.assert_close(out["cuda"].cpu(), out["cpu"], rtol=0, atol=1e-6)
    # end to end: SnapMix with a cache on CUDA re-projects instead of running the CAM pass
    x, y = _batch(n=8, seed=4)
    _, model = _models()
    geo = CropGeometry(indices=torch.arange(8), window=torch.tensor([[0.0, 64, 0, 64]] * 8),
                       flip=torch.zeros(8, dtype=torch.bool))
    mix = SnapMix(num_classes=K, cache=CAMCache(size=8, device="cuda"))
    mix(x.cuda(), y.cuda(), model=model, geometry=geo)
    mix(x.cuda(), y.cuda(), model=model, geometry=geo)
    assert mix.cache_stats["exact"] == 8 and mix.cache_stats["cached"] == 8


def test_saliency_on_cuda_equals_cpu():
    """The batched detector on the GPU: the same maps bit for bit (integer and IEEE float32
    steps only), so SaliencyMix samples the same boxes from a CUDA batch."""
    from dali_snapmix.mix.saliency import fine_grained_saliency

    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (6, 3, 96, 80), generator=g, dtype=torch.int32)
    levels[:, :, 30:50, 20:40] = 250  # a bright patch: a peak with structure around it
    assert torch.equal(fine_grained_saliency(levels.cuda()).cpu(), fine_grained_saliency(levels))
    x, y = _batch(n=7, side=96)
    for semantics in ("paper", "released"):
        cpu = SaliencyMix(semantics=semantics, seed=3).sample(x, y)
        gpu = SaliencyMix(semantics=semantics, seed=3).sample(x.cuda(), y.cuda())
        assert torch.equal(gpu.dst_box, cpu.dst_box) and torch.equal(gpu.perm, cpu.perm), semantics


def test_guided_sr_samples_on_cuda_as_on_cpu():
    """Guided-SR's saliency (cuFFT), distances and greedy cycle on the GPU: the same partners
    and masks within float32 FFT error."""
    x, y = _batch(n=9, side=150)  # taller than the 128 cap: the resizes too
    cpu = GuidedMixup(prob=1.0, seed=0).sample(x, y)
    gpu = GuidedMixup(prob=1.0, seed=0).sample(x.cuda(), y.cuda())
    assert torch.equal(gpu.perm.cpu(), cpu.perm)
    torch.testing.assert_close(gpu.masks.cpu(), cpu.masks, rtol=0, atol=1e-4)


def test_manifold_mixup_step_on_cuda_equals_cpu():
    """Manifold Mixup's hook on a CUDA forward: the same logits and loss as on the CPU for
    each layer of S (cuDNN's convolutions: within float32 summation-order error)."""
    import torchvision

    from dali_snapmix.mix import ManifoldMixup, hidden_mixing, mixed_cross_entropy
    from dali_snapmix.mix.manifold import ManifoldParams

    x, y = _batch(n=6, side=64)
    torch.manual_seed(0)
    cpu = torchvision.models.resnet18(num_classes=K).eval()
    gpu = copy.deepcopy(cpu).cuda()
    mix = ManifoldMixup()
    for layer in range(3):
        p = ManifoldParams(mix=True, perm=torch.tensor([3, 0, 5, 1, 2, 4]), lam=0.35, layer=layer)
        t_cpu = mix.apply(x.clone(), y, p, model=cpu)
        t_gpu = mix.apply(x.cuda(), y.cuda(), p, model=gpu)
        with torch.no_grad(), hidden_mixing(t_cpu):
            l_cpu = cpu(t_cpu.images)
        with torch.no_grad(), hidden_mixing(t_gpu):
            l_gpu = gpu(t_gpu.images)
        torch.testing.assert_close(l_gpu.cpu(), l_cpu, rtol=0, atol=1e-3)
        torch.testing.assert_close(mixed_cross_entropy(l_gpu, t_gpu).cpu(), mixed_cross_entropy(l_cpu, t_cpu),
                                   rtol=0, atol=1e-4)


def test_puzzlemix_solver_transport_and_mix_on_cuda_equal_cpu():
    """PuzzleMix's saliency differs across devices by float rounding (cuDNN against oneDNN),
    which may flip a near-tie of the labelling: the solver, the transport and the mix are
    compared on the same inputs instead. The solver's torch reference gives the CPU's labels
    exactly; its CUDA kernel may contract a multiply-add (NVVM's default), which can break
    an exact tie otherwise: its energies within 1 % of the CPU's, most labels equal."""
    from dali_snapmix.mix import PuzzleMix
    from dali_snapmix.mix.grid_mrf import grid_energy, solve_grid_mrf
    from dali_snapmix.mix.puzzlemix import puzzle_energy, puzzle_transport

    x, y = _batch(n=9, side=64, seed=4)
    m_cpu, _ = _models()
    mix = PuzzleMix(num_classes=K)
    sal = torch.rand(9, 64, 64, generator=torch.Generator().manual_seed(1)) ** 4
    for rep, n in enumerate((2, 4, 8, 16)):
        perm = torch.from_numpy(np.random.default_rng(rep).permutation(9))
        terms = puzzle_energy(sal, mix.pixels(x), perm, block_num=n, lam=0.3 + 0.1 * rep)
        lab = solve_grid_mrf(*terms[:4])
        on_gpu = [t.cuda() for t in terms[:4]]
        assert torch.equal(solve_grid_mrf(*on_gpu, backend="reference").cpu(), lab)
        lab_gpu = solve_grid_mrf(*on_gpu).cpu()
        e_cpu, e_gpu = grid_energy(lab, *terms[:4]), grid_energy(lab_gpu, *terms[:4])
        assert bool(((e_gpu - e_cpu) / e_cpu.abs() < 0.01).all()), (n, e_gpu, e_cpu)
        assert int((lab_gpu == lab).flatten(1).all(1).sum()) >= 7, n
        grid = (1 - lab / 2).float()
        assert torch.equal(puzzle_transport(grid.cuda(), terms[4].cuda()).cpu(), puzzle_transport(grid, terms[4]))
        params = mix.sample(x, y, rng=np.random.default_rng(rep))
        resolved = mix.resolve(x, y, params, model=m_cpu)
        cpu = mix(x.clone(), y, params=resolved)
        gpu = mix(x.cuda(), y.cuda(), params=resolved)
        torch.testing.assert_close(gpu.images.cpu(), cpu.images, rtol=0, atol=1e-6)
        torch.testing.assert_close(gpu.weights.cpu(), cpu.weights, rtol=0, atol=0)


def test_comixup_groups_and_mix_on_cuda_as_on_cpu():
    """Co-Mixup's loop on CUDA from the same saliency (the saliency itself differs across
    devices by float rounding). Its grid solver's CUDA kernel may contract a multiply-add,
    which can break an exact tie another way, and the outputs are solved one after another,
    so one flip can move later outputs: the objective within 2 % of the CPU's, most
    labellings equal; given the same labellings, the mix equal."""
    from dali_snapmix.mix import CoMixup
    from dali_snapmix.mix.comixup import comix_cost, comix_objective

    x, y = _batch(n=9, side=64, seed=5)
    sal = torch.rand(9, 64, 64, generator=torch.Generator().manual_seed(2)) ** 4
    for rep, n in enumerate((2, 4, 8)):
        mix = CoMixup(num_classes=K, part=5, block_num=n)
        params = mix.sample(x, y, rng=np.random.default_rng(rep))
        cpu, gpu = mix.masks_from(sal, params).weights, mix.masks_from(sal.cuda(), params).weights
        for g in (slice(0, 5), slice(5, 9)):
            cost = comix_cost(sal[g], n)
            o_cpu, o_gpu = (float(comix_objective(cost, w[g, ..., :g.stop - g.start], beta=0.02, gamma=0.06))
                            for w in (cpu, gpu))
            assert abs(o_gpu - o_cpu) <= 0.02 * abs(o_cpu), (n, o_gpu, o_cpu)
        assert int((gpu == cpu).flatten(1).all(1).sum()) >= 6, n
        resolved = mix.masks_from(sal, params)
        a = mix.apply(x.clone(), y, resolved)
        b = mix.apply(x.cuda(), y.cuda(), resolved)
        torch.testing.assert_close(b.images.cpu(), a.images, rtol=0, atol=1e-6)
        torch.testing.assert_close(b.weights.cpu(), a.weights, rtol=0, atol=0)
        assert torch.equal(b.labels.cpu(), a.labels)


def test_automix_step_on_cuda_as_on_cpu():
    """One AutoMix step (its teacher's passes, the Mix Block's SGD step, the classifier's
    mask, the EMA) on CUDA from the CPU run's starting state: the same losses, batch, phi
    and teacher up to cuDNN's float32 rounding against oneDNN's."""
    from dali_snapmix.mix import AutoMix

    x, y = _batch(n=9, side=64, seed=7)
    runs = []
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        student = SmallCNN(K).train().to(dev)
        mix = AutoMix.following(student, epochs=2, steps_per_epoch=3, num_classes=K)
        params = mix.sample(x, y, rng=np.random.default_rng(3))
        out = mix.apply(x.clone().to(dev), y.to(dev), params)
        mix.after_step(student)
        runs.append((out, mix))
    (a, ma), (b, mb) = runs
    assert b.images.is_cuda and mb.block.query.weight.is_cuda
    torch.testing.assert_close(b.images.cpu(), a.images, rtol=0, atol=1e-4)
    torch.testing.assert_close(b.weights.cpu(), a.weights, rtol=0, atol=0)
    for k in ("mix_k", "mask"):
        torch.testing.assert_close(mb.last_losses[k].cpu(), ma.last_losses[k], rtol=1e-4, atol=1e-6)
    for p, q in zip(mb.block.parameters(), ma.block.parameters()):  # lr 0.01 x gradients that a ReLU or
        # max-pool kink can route differently across devices (about 1 % in rare cases, float32 against float64)
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=0, atol=1e-4)
    for (k, p), q in zip(mb.teacher.state_dict().items(), ma.teacher.state_dict().values()):
        torch.testing.assert_close(p.cpu().double(), q.double(), rtol=1e-4, atol=1e-5, msg=k)
