"""Augmentation overhead per method for one training step (GuidedMixup's metric, Table 2):
step time with the augmentation / step time without it - 1.

    python benchmarks/overhead.py                         # ResNet-18, 224 crops, batch 16, CPU
    python benchmarks/overhead.py --model resnet50 --crop 448
    python benchmarks/overhead.py --device cuda --amp bf16   # bf16 autocast: the step's forward and the CAM pass

The loader is excluded: every step starts from the same pre-loaded batch (a copy of it,
since mixing works in place; the copy is in every variant). Every method mixes on every
step (prob 1): the figures are the cost of a mixing step; at a switch probability p a
run pays p times the overhead. Variants:
  baseline, mixup, cutmix, cutout, resizemix, ricap, fmix, smoothmix, samplepairing,
  mixed-example (its default variant, vh-mixup), saliencymix (a saliency map per sample),
  manifold (Manifold Mixup: its hook mixes inside the training forward, so its time is in the
  step, not inside the augmentation), guided-sr, guided-ap (greedy pairing; AP's saliency
  pass is a forward and an input-only backward of the model), snapmix
                                             our methods (SnapMix exact, released semantics)
  saliencymix-released                       SaliencyMix with one saliency map per batch (its release)
  guided-sr-reference                        Guided-SR as GuidedMixup's FGVC release runs it: torchvision
                                             ops, broadcast distances, the greedy walk in numpy
  guided-ap-reference                        Guided-AP as that release runs it: a full backward of the
                                             clean batch (parameter gradients too), then the same
  saliencymix-reference                      SaliencyMix the authors' way, per sample: each source to
                                             the host, OpenCV's CPU detector, a slice paste (needs
                                             opencv-contrib-python-headless; else no row)
  puzzlemix-reference                        PuzzleMix as its release runs it: a full backward of the
                                             clean batch in eval mode, the energy's terms to the host,
                                             gco's alpha-beta swap per sample, the transport's 0/1 plans
                                             applied by matrix products (needs gco-wrapper; else no row)
  comixup-reference                          Co-Mixup as its release runs it (no --parallel): a full
                                             backward of the clean batch in eval mode, the release's
                                             loop in torch with gco's alpha-beta swap per output and
                                             round on the host (needs gco-wrapper; else no row)
  automix                                    AutoMix's whole step: inside the augmentation its teacher's
                                             no-grad forward (timed apart), the Mix Block twice, the
                                             teacher's forward and backward on the Mix Block's batch and
                                             its SGD step; in the step, the classifier's one-hot forward
                                             on the clean batch (its second forward) and the EMA
  attentivemix                               AttentiveMix (k 6 of 7 x 7) with the CAMs of the model
                                             being trained (one no-grad forward, eval mode)
  attentivemix-reference                     AttentiveMix as its unofficial release runs it, per
                                             sample: a forward of each partner alone, the map to
                                             the host, numpy's top-k, a slice paste per cell
  snapmix-lowres                             SnapMix with the CAM pass on a half-size copy
  snapmix-cached                             SnapMix with cached CAMs re-projected into each
                                             step's crops (new random windows and flips every
                                             step), no refresh; the amortised figure adds one
                                             exact epoch per --refresh-every epochs
  baseline-again                             the baseline step once more under another name: an
                                             A/A control, whose "overhead" is the timing's own
                                             resolution on this machine
  floor                                      a baseline step + one bare no-grad backbone forward
                                             (input laid out as SnapMix's CAM pass lays it out):
                                             the CAM pass alone, the least exact SnapMix can cost
  snapmix-reference                          SnapMix as the authors' release computes it: Python
                                             per batch, a conv over all classes, full-resolution
                                             upsampling then masked sums, interpolate + slice paste
Warm-up, then rounds, each in a fresh random order. Overhead = the median over rounds of each
round's step time / that round's baseline step - 1 (paired: drift cancels), with its
interquartile range. The time inside each augmentation and inside its CAM forward is
timed too: what SnapMix does beyond the forward, as a share of a baseline step, is the
steady figure for the "exact SnapMix at most 2 points above the floor" target. CUDA
events on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import platform
import statistics
import time

import numpy as np
import torch

from dali_snapmix.data import CropGeometry
from dali_snapmix.data.spec import IMAGENET_MEAN, IMAGENET_STD, unnormalise
from dali_snapmix.mix import CAMCache, CAMHead, MixedBatch, build_mix, hidden_mixing, mixed_cross_entropy
from dali_snapmix.mix.automix import AutoMix
from dali_snapmix.mix.params import sample_box_params
from dali_snapmix.mix.released import released_snapmix
from dali_snapmix.models import build_model
from dali_snapmix.timing import clock, shuffled_rounds

# the methods without a CAM pass, each a row at its paper's defaults (prob 1)
HAND_CRAFTED = ("mixup", "cutmix", "cutout", "resizemix", "ricap", "fmix", "smoothmix", "samplepairing", "mixed-example",
                "saliencymix", "manifold", "guided-sr", "guided-ap", "puzzlemix", "comixup")


# rows every run times: the pairing's reference and SnapMix's summary lines
ALWAYS = ("baseline", "snapmix", "snapmix-lowres", "snapmix-cached", "floor")


def opencv_saliency():
    """OpenCV-contrib's fine-grained detector, or None where cv2 lacks the contrib modules
    (plain opencv-python, as on the GPU machine) or is absent."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2.saliency.StaticSaliencyFineGrained_create() if hasattr(cv2, "saliency") else None


def release_greedy(x: np.ndarray) -> np.ndarray:
    """GuidedMixup's FGVC ``greedy`` pairing (``Implementor/guidedmixup.py``), transcribed:
    from the largest entry of the (B, B) distances, each row to its largest entry, visited
    columns set to 0, the cycle closed at the end. B >= 2."""
    x = x.copy()
    b = x.shape[0]
    order = -np.ones(b, dtype=np.int64)
    row, col = divmod(int(np.argmax(x)), b)
    first = row
    order[row] = col
    x[:, row] = 0
    for _ in range(b - 2):
        row = col
        col = int(np.argmax(x[row]))
        order[row] = col
        x[:, row] = 0
    order[col] = first
    return order


def release_guided_mix(images, labels, sal):
    """GuidedMixup's FGVC mixing step on saliency maps ``sal`` (N, H, W), as released
    (``Implementor/guidedmixup.py``): torchvision's 2-D GaussianBlur (7, sigma 3), the sum to
    one, L2 distances by broadcasting (N, 1, HW) - (N, 1, HW), the greedy walk in numpy on the
    host, the masks stacked over the channels; in place."""
    from torchvision import transforms

    b = images.shape[0]
    with torch.no_grad():
        sal = transforms.GaussianBlur((7, 7), (3.0, 3.0))(sal)
        sal = sal / sal.sum(dim=[-1, -2], keepdim=True)
        flat = sal.view(b, -1)
        idx = torch.from_numpy(release_greedy((flat.unsqueeze(1) - flat.unsqueeze(0)).norm(dim=-1).cpu().numpy()))
        idx = idx.to(images.device)
        other = sal[idx]
        mask_a = torch.stack([sal / (sal + other)] * 3, dim=1)
        mask_b = torch.stack([other / (sal + other)] * 3, dim=1)
        images.copy_(mask_a * images + mask_b * images[idx])
        w_a = (sal / (sal + other)).mean(dim=[1, 2])
    return MixedBatch.with_partner(images, labels, idx, w_a=w_a.float())


def guided_sr_authors_style(images, labels):
    """Guided-SR as GuidedMixup's FGVC release runs it (``Utils/spectral_residual.py``:
    torchvision's Grayscale, Resize and GaussianBlur, an nn.Conv2d box filter), then
    :func:`release_guided_mix`; every batch mixed. The same output as ``GuidedMixup`` up to
    float32 rounding."""
    import torch.nn.functional as F
    from torchvision import transforms
    from torchvision.transforms import functional as TF

    _, _, h, w = images.shape
    with torch.no_grad():
        grey = transforms.Grayscale(num_output_channels=1)(images)
        if h > 128:
            grey = transforms.Resize((128, 128))(grey)
        freq = torch.fft.fft2(grey)
        mag = (freq.real ** 2 + freq.imag ** 2 + 1e-10).sqrt()
        box = F.conv2d(F.pad(mag.log(), (1, 1, 1, 1), mode="replicate"), torch.full((1, 1, 3, 3), 1 / 9, device=images.device))
        residual = (mag.log() - box).exp()
        freq = torch.complex(freq.real * residual / mag, freq.imag * residual / mag)
        sal = torch.fft.ifft2(freq).squeeze(1)
        sal = transforms.GaussianBlur((7, 7), (3.0, 3.0))((sal.real ** 2 + sal.imag ** 2).sqrt())
        if h > 128:
            sal = TF.resize(sal, size=(h, w))
    return release_guided_mix(images, labels, sal)


def release_saliency(images, labels, model, *, eval_mode: bool) -> torch.Tensor:
    """The input-gradient saliency (N, H, W) as the releases compute it: the clean batch's
    loss backpropagated through the whole model (its parameters' gradients too, then zeroed,
    as ``optimizer.zero_grad()``), the gradient's channel RMS; ``eval_mode``: BatchNorm in
    eval mode for the pass (PuzzleMix and Co-Mixup without a clean loss), the model's mode
    restored after."""
    was = model.training
    if eval_mode:
        model.eval()
    x = images.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), labels).backward()
    model.zero_grad(set_to_none=True)
    model.train(was)
    return (x.grad ** 2).mean(dim=1).sqrt().detach()


def guided_ap_authors_style(images, labels, model):
    """Guided-AP as the FGVC release runs it: the clean batch's loss backpropagated through
    the model (its parameters' gradients too, then zeroed, as ``optimizer.zero_grad()``), the
    input gradient's channel RMS, then :func:`release_guided_mix`."""
    return release_guided_mix(images, labels, release_saliency(images, labels, model, eval_mode=False))


def attentivemix_authors_style(images, labels, perm, *, model, k: int = 6):
    """AttentiveMix the way its unofficial release (xden2331/attentive_cutmix) runs it, one
    image at a time: each partner's attention from a forward of that image alone (here the
    model's CAM of the partner's class, in eval mode, as ``AttentiveMix``'s default; the
    release takes a fixed ResNet-50's last channel), copied to the host, ``np.argpartition``'s
    top k of the map (the grid is the map: 7 x 7 at 224 px), each cell pasted by a slice from
    a copy of the batch; lam = k / cells. The same output as ``AttentiveMix(grid=side of the
    map)`` given the same partners, where the map's side divides the image's."""
    from dali_snapmix.mix.cam import CAMHead

    n, _, h, w = images.shape
    head = CAMHead.of(model)
    was_training = model.training
    model.eval()
    cells = []
    with torch.no_grad():
        for i in range(n):
            j = int(perm[i])
            f = torch.relu(head.features(images[j:j + 1]))[0]
            cam = torch.einsum("chw,c->hw", f, head.classifier.weight[labels[j]]) + head.classifier.bias[labels[j]]
            a = cam.float().cpu().numpy()
            top = np.argpartition(a.ravel(), a.size - k)[-k:]
            cells.append(np.column_stack(np.unravel_index(top, a.shape)))
    model.train(was_training)
    sources = images[perm.to(images.device)]
    ch, cw = h // a.shape[0], w // a.shape[1]
    for i, chosen in enumerate(cells):
        for r, c in chosen:
            images[i, :, r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = sources[i, :, r * ch:(r + 1) * ch, c * cw:(c + 1) * cw]
    return MixedBatch.with_partner(images, labels, perm, w_b=torch.full((n,), k / a.size))


def puzzlemix_authors_style(images, labels, model, params, *, gco, saliency_time, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """PuzzleMix as its release (snu-mllab/PuzzleMix, ``imagenet/train.py`` and ``mixup.py``)
    runs a step: the clean batch's loss backpropagated in eval mode (parameter gradients
    too, then zeroed), then with ``params``' lam, partners and grid (PuzzleMix's draws, so
    that both rows mix on the same grids) the energy's terms built in torch and
    copied to the host, one gco alpha-beta swap per sample on int32 costs (1000 n^2 x the
    float costs), the masks back to the device, each image's transport plan as a 0/1
    (n^2, n^2) matrix applied by a matrix product over its blocks. The terms and transport
    are ours (tested against a transcription of the release); the rest is the release's
    way. ``saliency_time`` wraps the saliency pass (timed apart)."""
    from dali_snapmix.mix.puzzlemix import puzzle_energy, puzzle_transport

    grad = saliency_time(release_saliency)(images, labels, model, eval_mode=True)
    lam, perm, n = params.lam, params.perm.to(images.device), params.block_num
    dev = images.device
    with torch.no_grad():
        unary, wv, wh, pw, u_a = puzzle_energy(grad, unnormalise(images, mean, std), perm, block_num=n, lam=lam)
        big = 1000 * n * n
        u_h, v_h, h_h = ((big * t).cpu().numpy().astype(np.int32) for t in (unary, wv, wh))
        pw_h = pw.cpu().numpy().astype(np.float32)
        masks = [1.0 - gco.cut_grid_graph(u_h[i], pw_h, v_h[i], h_h[i], algorithm="swap").reshape(n, n) / 2
                 for i in range(len(images))]
        grid = torch.tensor(np.stack(masks), dtype=torch.float32, device=dev)
        b, _, h, w = images.shape

        def moved(x, src):  # the release's transport_image: blocks as vectors, plan^T @ blocks
            plan = torch.zeros(b, n * n, n * n, device=dev).scatter_(1, src.clamp_min(0)[:, None, :], 1.0)
            plan = plan * (src >= 0)[:, None, :].float()
            blocks = x.reshape(b, 3, n, h // n, n, w // n).permute(0, 1, 3, 5, 2, 4).reshape(b, 3, h // n, w // n, n * n, 1)
            out = plan.transpose(1, 2)[:, None, None, None].matmul(blocks).squeeze(-1)
            return out.reshape(b, 3, h // n, w // n, n, n).permute(0, 1, 4, 2, 5, 3).reshape(b, 3, h, w)

        own = moved(images, puzzle_transport(grid, u_a))
        other = moved(images[perm], puzzle_transport(1 - grid, u_a[perm]))
        mask = torch.nn.functional.interpolate(grid[:, None], size=(h, w))
        images.copy_(mask * own + (1 - mask) * other)
    return MixedBatch.with_partner(images, labels, perm, w_a=mask.flatten(1).mean(1))


def comixup_authors_style(images, labels, model, params, *, num_classes, gco, saliency_time, beta=0.32, gamma=1.0,
                          eta=0.05, thres=0.83, omega=0.001, niter=4, set_resolve=True):
    """Co-Mixup as its release (snu-mllab/Co-Mixup, ``main.py``, ``mixup.py``, ``match.py``)
    runs a step without ``--parallel``: the clean batch's loss backpropagated in eval mode
    (its ``clean_lam`` 0: parameter gradients too, then zeroed), the peaks' distances, then
    per group of ``params.part`` (with ``params``' Dirichlet draws and first labellings, so
    that both rows solve the same problems) the release's loop in float32 torch, each
    output's labelling by gco's alpha-beta swap on the host (float costs: gco scales and
    rounds them), the outputs by nearest upsampling and a sum over the group's inputs, the
    targets by a matrix product with one-hot labels (returned as K = ``num_classes`` labels,
    the dense targets). ``saliency_time`` wraps the saliency pass (timed apart)."""
    F = torch.nn.functional
    dev = images.device

    sc = saliency_time(release_saliency)(images, labels, model, eval_mode=True)
    N, _, h, w = images.shape
    n, part = params.block_num, params.part
    with torch.no_grad():
        z = F.avg_pool2d(sc, kernel_size=8, stride=1)
        idx = z.reshape(N, -1).argmax(1)
        peaks = torch.stack([idx // z.shape[-1], idx % z.shape[-1]], 1).float()
        a_dist = (peaks[:, None] - peaks[None]).abs().sum(-1)
        sc = F.avg_pool2d(sc, (h // n, w // n))
        beta_n, gamma_n, eta_n, thres_n = beta / n ** 2, gamma / n ** 2, eta / n ** 2, thres * n ** 2

        def cut(cost_hwl, count, soft):
            """graphcut_wrapper: the half labels of the used inputs, gco, back to weights."""
            P = count.shape[0]
            used = count > 0
            k = int(used.sum()) if soft else 0
            pw = np.ones((P, P), np.float32) - np.eye(P, dtype=np.float32)
            halves = torch.zeros(0, P, device=dev)
            if k == 2:
                cost_hwl = torch.cat([cost_hwl, cost_hwl[:, :, used].mean(-1, keepdim=True) - 5e-4], -1)
                pw = np.ones((P + 1, P + 1), np.float32) - np.eye(P + 1, dtype=np.float32)
                pw[-1, :-1][used.cpu().numpy()] = 0.25
                pw[:-1, -1][used.cpu().numpy()] = 0.25
                halves = used.float()[None] * 0.5
            elif k >= 3:
                soft_label = torch.tensor([[0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], device=dev)
                top = torch.zeros_like(used)
                top[torch.topk(count, k=3).indices] = True
                cost_hwl = torch.cat([cost_hwl, cost_hwl[:, :, top] @ soft_label - 5e-4], -1)
                q = np.array([[0.25, 0.25, 1], [0.25, 1, 0.25], [1, 0.25, 0.25]], np.float32)
                pw = np.ones((P + 3, P + 3), np.float32) - np.eye(P + 3, dtype=np.float32)
                pw[-3:, :-3][:, top.cpu().numpy()] = q
                pw[:-3, -3:][top.cpu().numpy(), :] = q
                halves = torch.zeros(3, P, device=dev)
                halves[:, top] = soft_label
            unary = np.ascontiguousarray(cost_hwl.cpu().numpy())
            lab = gco.cut_grid_graph(unary, pw, beta_n * np.ones((n - 1, n), np.float32),
                                     beta_n * np.ones((n, n - 1), np.float32), algorithm="swap")
            onehot = F.one_hot(torch.as_tensor(np.asarray(lab), dtype=torch.long, device=dev), P + len(halves)).float()
            return (onehot[:, :P] + onehot[:, P:] @ halves).reshape(n, n, P)

        def objective(cost, m):  # obj_fn: the objective without the threshold
            counts = m.reshape(len(m), -1, m.shape[-1]).sum(1)
            return ((cost.permute(1, 2, 0)[None] * m).sum()
                    + beta_n / 2 * (((m[:, :-1] - m[:, 1:]) ** 2).sum() + ((m[:, :, :-1] - m[:, :, 1:]) ** 2).sum())
                    + gamma_n * ((counts.sum(0) ** 2).sum() - (counts ** 2).sum()))

        out, target = torch.empty_like(images), []
        for g0 in range(0, N, part):
            g = slice(g0, min(g0 + part, N))
            P = g.stop - g0
            sc_g = sc[g]
            cost = -sc_g / sc_g.reshape(P, -1).sum(1).reshape(P, 1, 1)
            A_part = a_dist[g, g] / a_dist[g, g].sum() * P
            A = (1 - omega) * torch.eye(P, device=dev) + omega * A_part
            cost = cost - eta_n * torch.log(params.prior[g].float().to(dev).reshape(P, 1, 1) + 1e-8)

            m = F.one_hot(params.init[g].to(dev), P).float()
            loss_prev = objective(cost, m)
            penalty = m.reshape(-1, P).sum(0)
            add_cost = None
            for it in range(niter):
                for i in range(P):
                    count = m[i].reshape(-1, P).sum(0)
                    penalty -= count
                    ap = A @ penalty
                    c = cost + (2 * gamma_n * (ap > thres_n).float() * ap).reshape(P, 1, 1)
                    if add_cost is not None:
                        c = c + gamma_n * add_cost[i].reshape(P, 1, 1)
                    m[i] = cut(c.permute(1, 2, 0), count, it > 0)
                    penalty += m[i].reshape(-1, P).sum(0)
                if it == niter - 2 and set_resolve:  # resolve_label: identical input sets kept apart
                    used = (m.reshape(P, -1, P).sum(1) > 0).float()
                    dist = torch.clamp((used[:, None] - used[None]).abs().sum(-1), max=1.0)
                    add_cost = torch.zeros_like(used)
                    for i1, i2 in torch.triu(1.0 - dist, diagonal=1).nonzero():
                        nz = used[i1].nonzero()
                        if len(nz) > 1:
                            add_cost[i1][nz[0]] = 1.0
                            add_cost[i2][nz[1]] = 1.0
                loss = objective(cost, m)
                if (loss_prev - loss).abs() / loss.abs() < 1e-6:
                    break
                loss_prev = loss
            up = F.interpolate(m.permute(0, 3, 1, 2), size=(h, w), mode="nearest")
            out[g] = (up[:, :, None] * images[g][None]).sum(1)
            onehot = F.one_hot(labels[g], num_classes).float()
            t = (m @ onehot).reshape(P, -1, num_classes).sum(1)
            target.append(t / t.sum(-1, keepdim=True))
        images.copy_(out)
    # the release's dense targets on the label contract: K = every class
    return MixedBatch(images, labels=torch.arange(num_classes, device=dev).expand(N, -1), weights=torch.cat(target))


def saliencymix_authors_style(images, labels, *, rng, detector, mean, std):
    """SaliencyMix as its release runs the detector, but per sample (GuidedMixup's Table 2
    setting): one lam and randperm per batch (the release's draws, in its order), then for
    each sample its source copied to the host, OpenCV's detector on its 8-bit image,
    ``np.argmax`` and the clipped box; the patches pasted from a copy of the sources, as the
    release's right-hand side ``images[rand_index, ...]`` is. The same draws and boxes as
    ``SaliencyMix`` (paper semantics) given the same generator state."""
    n, _, h, w = images.shape
    rng.random()  # the switch coin (prob 1)
    lam = rng.beta(1.0, 1.0)
    perm = rng.permutation(n)
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    boxes = []
    for i in range(n):
        src = images[perm[i]].cpu().numpy()
        rgb = np.clip(np.rint((src * s + m) * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        _, sal = detector.computeSaliency(np.ascontiguousarray(rgb[..., ::-1]))
        sal = (sal * 255).astype(np.uint8) if sal.dtype != np.uint8 else sal
        cy, cx = np.unravel_index(np.argmax(sal, axis=None), sal.shape)
        boxes.append((np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h), np.clip(cx - cw // 2, 0, w),
                      np.clip(cx + cw // 2, 0, w)))
    idx = torch.from_numpy(perm).to(images.device)
    sources = images[idx]
    w_b = torch.empty(n, dtype=torch.float64)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        images[i, :, y0:y1, x0:x1] = sources[i, :, y0:y1, x0:x1]
        w_b[i] = (y1 - y0) * (x1 - x0) / (h * w)
    return MixedBatch.with_partner(images, labels, idx, w_b=w_b.float())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--classes", type=int, default=200, help="classifier width (CUB: 200)")
    ap.add_argument("--repeats", type=int, default=10, help="interleaved rounds (medians over them)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--plot", default="runs/overhead.png", help="bar chart path ('' to skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refresh-every", type=int, default=5, help="cached mode's exact refresh period, epochs (amortised figure)")
    ap.add_argument("--amp", default="off", choices=["off", "bf16"], help="bf16 autocast (CUDA): training forward, "
                    "SnapMix's CAM pass and the floor's forward alike")
    ap.add_argument("--json", default="", help="also write the figures to this JSON file")
    ap.add_argument("--rows", default="", help="comma-separated rows to time (default: all); the baseline and the "
                    "rows of SnapMix's summary lines (snapmix, snapmix-lowres, snapmix-cached, floor) always run")
    a = ap.parse_args(argv)

    dev = torch.device("cuda" if a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available()) else "cpu")
    if a.amp != "off" and dev.type != "cuda":
        raise SystemExit(f"--amp {a.amp} is for CUDA runs; this run is on {dev}")
    amp = a.amp == "bf16"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    torch.manual_seed(a.seed)
    model = build_model(a.model, num_classes=a.classes).to(dev).train()
    head = CAMHead.of(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)  # tiny lr: weights barely move
    g = torch.Generator().manual_seed(a.seed)
    batch = torch.randn(a.batch, 3, a.crop, a.crop, generator=g).to(dev)
    labels = torch.randint(0, a.classes, (a.batch,), generator=g).to(dev)
    # prob 1 for every method: each step pays for a real mix (the papers' prob 0.5 for Mixup
    # and CutOut would make the median a coin toss between mixed and clean steps, and could
    # leave a kernel uncompiled after the warm-up)
    mixers = {m: build_mix(m, num_classes=a.classes, seed=a.seed, **({} if m == "baseline" else {"prob": 1.0}),
                           **({"autocast": amp} if m in ("snapmix", "attentivemix") else {}))
              for m in ("baseline", *HAND_CRAFTED, "attentivemix", "snapmix")}
    # its schedules at their start (mask loss weight 0.1, momentum 0.999): the step's cost does not depend on them
    mixers["automix"] = AutoMix.following(model, epochs=1, steps_per_epoch=1 << 30, num_classes=a.classes, seed=a.seed)
    mixers["baseline-again"] = mixers["baseline"]  # A/A control: what the timing says of no difference
    mixers["saliencymix-released"] = build_mix("saliencymix", num_classes=a.classes, seed=a.seed, prob=1.0,
                                               semantics="released")
    detector = opencv_saliency()
    sal_rng = np.random.default_rng(a.seed)
    mixers["snapmix-lowres"] = build_mix("snapmix", num_classes=a.classes, seed=a.seed, prob=1.0, cam_resolution=0.5,
                                         autocast=amp)
    # the cache holds the batch's maps after the warm-up; never stale here (per-step cost)
    mixers["snapmix-cached"] = build_mix("snapmix", num_classes=a.classes, seed=a.seed, prob=1.0, autocast=amp,
                                         cache=CAMCache(size=a.batch, refresh_every=1 << 30, device=dev))
    geo_rng = np.random.default_rng(a.seed)

    def geometry():  # each step's crops: a random 87.5% window of a 1.14x larger source, random flips
        side = a.crop * 8 / 7
        y0, x0 = geo_rng.uniform(0, side - a.crop, (2, a.batch))
        win = torch.from_numpy(np.stack([y0, y0 + a.crop, x0, x0 + a.crop], 1)).float()
        return CropGeometry(indices=torch.arange(a.batch), window=win, flip=torch.from_numpy(geo_rng.random(a.batch) < 0.5))
    ref_rng = np.random.default_rng(a.seed)
    aug_time: dict[str, list[float]] = {}
    cam_time: dict[str, list[float]] = {}  # the CAM forward inside the augmentation (floor: its forward)
    cam_now = [0.0]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timing_cams(fn):
        def run(*args, **kw):
            sync()
            t = time.perf_counter()
            out = fn(*args, **kw)
            sync()
            cam_now[0] += time.perf_counter() - t
            return out
        return run

    for m in ("snapmix", "snapmix-lowres", "snapmix-cached", "attentivemix"):
        mixers[m].cam_pass.exact = timing_cams(mixers[m].cam_pass.exact)
    for m in ("puzzlemix", "comixup"):
        mixers[m].saliency = timing_cams(mixers[m].saliency)  # the saliency pass, timed apart
    mixers["automix"].teacher_features = timing_cams(mixers["automix"].teacher_features)  # its teacher's feature pass
    puzzle_draws = build_mix("puzzlemix", num_classes=a.classes, seed=a.seed, prob=1.0)  # the references' draws
    comix_draws = build_mix("comixup", num_classes=a.classes, seed=a.seed, prob=1.0)
    # the input as exact SnapMix's CAM pass feeds it (channels_last on the CPU), converted inside the timer as there
    def bare_forward(x):
        with autocast():
            return head.features(mixers["snapmix"].cam_pass.input(x))

    floor_forward = timing_cams(bare_forward)

    def step(name: str) -> None:
        x = batch.clone()
        sync()
        cam_now[0] = 0.0
        t = time.perf_counter()
        if name == "snapmix-reference":
            with autocast():  # the release has no autocast; under --amp its CAM pass gets the same as ours
                # the release draws its params inline: one box pair for the batch, randperm partners
                p = sample_box_params(ref_rng, n=a.batch, height=a.crop, width=a.crop, prob=1.0, beta=5.0,
                                      asymmetric=True, per_sample=False)
                target = released_snapmix(x, labels, p, head=head)
        elif name == "guided-sr-reference":
            target = guided_sr_authors_style(x, labels)
        elif name == "guided-ap-reference":
            target = guided_ap_authors_style(x, labels, model)
        elif name == "attentivemix-reference":
            with autocast():
                target = attentivemix_authors_style(x, labels, torch.from_numpy(ref_rng.permutation(a.batch)), model=model)
        elif name == "puzzlemix-reference":
            params = puzzle_draws.sample(x, labels)  # the same stream of grids, lam and partners as the puzzlemix row
            target = puzzlemix_authors_style(x, labels, model, params, gco=gco, saliency_time=timing_cams)
        elif name == "comixup-reference":
            params = comix_draws.sample(x, labels)  # the same priors and first labellings as the comixup row
            target = comixup_authors_style(x, labels, model, params, num_classes=a.classes, gco=gco,
                                           saliency_time=timing_cams)
        elif name == "saliencymix-reference":
            target = saliencymix_authors_style(x, labels, rng=sal_rng, detector=detector, mean=IMAGENET_MEAN,
                                               std=IMAGENET_STD)
        elif name == "floor":
            with torch.no_grad():
                floor_forward(x)
            target = mixers["baseline"](x, labels)
        elif name == "snapmix-cached":
            target = mixers[name](x, labels, model=model, geometry=geometry())
        else:
            target = mixers[name](x, labels, model=model)
        sync()
        aug_time.setdefault(name, []).append(time.perf_counter() - t)
        cam_time.setdefault(name, []).append(cam_now[0])
        with autocast(), hidden_mixing(target):  # Manifold Mixup's hook; else nothing
            logits = model(target.images)
        loss = mixed_cross_entropy(logits.float(), target)
        if name == "automix":  # its one-hot loss: the classifier's second forward, on the clean batch
            with autocast():
                loss = loss + torch.nn.functional.cross_entropy(model(batch).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if name == "automix":
            mixers[name].after_step(model)  # the teacher's EMA, part of its step

    names = ["baseline", "baseline-again", *HAND_CRAFTED, "automix", "saliencymix-released", "guided-sr-reference",
             "guided-ap-reference", "attentivemix", "attentivemix-reference", "snapmix", "snapmix-lowres",
             "snapmix-cached", "floor", "snapmix-reference"]
    try:
        import gco
        names[names.index("guided-ap-reference") + 1:names.index("guided-ap-reference") + 1] = ["puzzlemix-reference",
                                                                                                "comixup-reference"]
    except ImportError:
        gco = None
        print("no puzzlemix-reference and comixup-reference rows: gco-wrapper is not installed (pip install gco-wrapper)")
    if detector is not None:
        names.insert(names.index("saliencymix-released") + 1, "saliencymix-reference")
    else:
        print("no saliencymix-reference row: OpenCV's contrib modules are not installed "
              "(pip install opencv-contrib-python-headless)")
    if a.rows:
        wanted = [r for r in a.rows.split(",") if r]
        unknown = [r for r in wanted if r not in names]
        if unknown:
            raise SystemExit(f"--rows: no row {', '.join(unknown)} here; the rows: {', '.join(names)}")
        names = [n for n in names if n in {*wanted, *ALWAYS}]
    # shuffled rounds (dali_snapmix/timing.py): every variant follows a random predecessor
    times = shuffled_rounds({n: functools.partial(step, n) for n in names}, rounds=a.repeats, warmup=a.warmup,
                            seed=a.seed, measure=clock(dev.type))
    aug_time = {n: v[a.warmup:] for n, v in aug_time.items()}  # step() records the warm-up rounds too
    cam_time = {n: v[a.warmup:] for n, v in cam_time.items()}
    med = {n: statistics.median(v) for n, v in times.items()}
    aug = {n: statistics.median(v) for n, v in aug_time.items()}
    cam = {n: statistics.median(v) for n, v in cam_time.items()}
    # overhead from each round's own baseline step (paired): slow drift of the machine's
    # speed cancels; the spread of the paired ratios says how far to trust the figure
    paired = {n: [t / b - 1 for t, b in zip(times[n], times["baseline"])] for n in names}
    over = {n: statistics.median(v) for n, v in paired.items()}
    spread = {n: np.percentile(v, [25, 75]) for n, v in paired.items()}
    # what the augmentation costs beyond its CAM forward, as a share of a baseline step:
    # timed directly, so far steadier than differences of whole steps
    beyond = {n: (aug[n] - cam[n]) / med["baseline"] for n in names if n != "snapmix-reference"}
    k = a.refresh_every  # one exact epoch per k: the first epoch of every cycle
    amortised = (over["snapmix"] + (k - 1) * over["snapmix-cached"]) / k
    stats = mixers["snapmix-cached"].cache_stats
    if stats["exact"] != a.batch:  # its figure would not be the cached per-step cost
        raise RuntimeError(f"the cached variant ran exact passes after the warm-up: {stats}")

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads; python {platform.python_version()}, "
          f"torch {torch.__version__}; device {dev}")
    print(f"{a.model}, {a.crop}x{a.crop}, batch {a.batch}, {a.classes} classes, {a.repeats} interleaved rounds, medians"
          + (", bf16 autocast" if amp else ""))
    print("| method | median step ms | overhead (paired median) | interquartile range | inside the augmentation ms "
          "| of which CAM / saliency pass ms | rest, % of a baseline step |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        rest = f"{beyond[n]:.2%}" if n in beyond else "n/a"
        print(f"| {n} | {med[n] * 1e3:.1f} | {over[n]:+.1%} | {spread[n][0]:+.1%} .. {spread[n][1]:+.1%} | "
              f"{aug[n] * 1e3:.1f} | {cam[n] * 1e3:.1f} | {rest} |")
    cache = mixers["snapmix-cached"].cache
    print(f"snapmix-cached amortised over a run refreshing every {k} epochs: {amortised:+.1%}; "
          f"cache {cache.nbytes / a.batch:.0f} B per sample ({tuple(cache.cam.shape[1:])} maps)")
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        from pathlib import Path

        import matplotlib.pyplot as plt

        Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(9.5, 3.8))
        ax.bar(names, [over[n] * 100 for n in names], color=[{"floor": "#4a4", "snapmix-reference": "#a44", "saliencymix-reference": "#a44",
                                                           "guided-sr-reference": "#a44", "guided-ap-reference": "#a44",
                                                           "attentivemix-reference": "#a44", "puzzlemix-reference": "#a44",
                                                           "comixup-reference": "#a44"}.get(n, "#888") for n in names])
        ax.set_ylabel("overhead vs baseline step (%)")
        ax.set_title(f"{a.model} {a.crop}px batch {a.batch} on {dev}")
        plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=100)
        plt.close(fig)
    print(f"timed parts, as a share of a baseline step: exact SnapMix beyond its CAM forward {beyond['snapmix']:.2%}; "
          f"low-res augmentation {aug['snapmix-lowres'] / med['baseline']:.1%}; "
          f"cached augmentation {aug['snapmix-cached'] / med['baseline']:.2%}")
    gap = (over["snapmix"] - over["floor"]) * 100
    print(f"exact-floor {gap:+.1f} pts lowres {over['snapmix-lowres']:+.1%} cached {over['snapmix-cached']:+.1%} "
          f"(amortised {amortised:+.1%})")
    res = {"times_s": times, "median_s": med, "overhead": over, "augmentation_s": aug, "cam_s": cam, "beyond_cam": beyond,
           "cached_amortised": amortised, "exact_minus_floor_pts": gap,
           "setting": {"model": a.model, "crop": a.crop, "batch": a.batch, "amp": a.amp, "device": str(dev),
                       "repeats": a.repeats, "torch": torch.__version__}}
    if a.json:
        import json
        from pathlib import Path

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1, default=float))
    return res


if __name__ == "__main__":
    main()
