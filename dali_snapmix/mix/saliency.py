"""Saliency maps computed on the batch, on whichever device it lives: static fine-grained
saliency (SaliencyMix), spectral residual saliency (GuidedMixup's Guided-SR), input-gradient
saliency (Guided-AP, PuzzleMix, Co-Mixup), and the Gaussian smoothing and sum-to-one
normalisation those methods apply to a map.

Static fine-grained saliency (Montabone and Soto, "Human detection using a mobile platform
and novel features derived from a visual saliency mechanism", Image and Vision Computing
28(3), 2010, Sec. 2.2), as OpenCV-contrib's ``StaticSaliencyFineGrained`` computes it and
SaliencyMix uses it: grey level (ITU-R 601 luma), two 3x3 Gaussian smoothings, then at six
neighbourhood sizes n in (12, 24, 48, 28, 56, 112) the centre-surround differences

    on_n  = trunc(max(I - M_n, 0)),   off_n = trunc(max(M_n - I, 0)),

M_n the mean of the 2n x 2n window from (y - n + 1, x - n + 1) to (y + n, x + n) clipped
to the image, centre excluded; on and off summed over the scales and each scaled to
[0, 255] by its image's maximum; the map is 255 (on + off) / max(max on, max off), cast to
8 bits as OpenCV's C cast does (a value over 255 wraps).

Batched, integer-exact where OpenCV is: the luma and the smoothing in OpenCV's fixed
point (torch ops on float32 integers below 2^24: exact on every device), the integral
image summed in float64 and kept in float32 as OpenCV keeps it, then the window means,
their sums over the scales and the merge in the kernel ``kernels.centre_surround`` (one
source for the CPU and CUDA, float32 in OpenCV's order of operations; a torch reference
beside it). OpenCV accumulates its integral image in float32, exact while an image's grey
levels sum below 2^24 (every image up to 256 x 256): there the maps are equal bit for bit
(``tests/mix/test_saliency.py`` checks them against OpenCV's own); above that OpenCV's
running sums round on their way and ours round once, so a few pixels in a thousand of a
large map differ, by one level. Its cost beside OpenCV's, one image at a time on the
host: ``benchmarks/overhead.py``, rows saliencymix and saliencymix-reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import kernels

__all__ = ["FINE_GRAINED_SCALES", "fine_grained_saliency", "input_gradient", "normalise_sum", "smooth", "spectral_residual",
           "to_levels"]

FINE_GRAINED_SCALES = (12, 24, 48, 28, 56, 112)  # OpenCV's neighbourhoods, in its order
_LUMA = (9798, 19235, 3735)  # R, G, B weights of OpenCV's 8-bit RGB -> grey, in 1/2^15


def to_levels(images: torch.Tensor, *, mean, std) -> torch.Tensor:
    """Normalised NCHW floats back to 8-bit levels, rounded and clipped to 0..255, as
    float32 (the detector computes in float32): the image a detector written for 8-bit
    pictures would have been given."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    out = images.float() * s  # then in place: a third of the time of fresh tensors
    return out.add_(m).mul_(255.0).round_().clamp_(0, 255)


def _smooth(grey: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit GaussianBlur, 3x3, sigma 0 ([1, 2, 1] / 4 each way, reflect-101
    borders), on float32 grey levels: the exact sum / 16, rounded half up."""
    g = F.pad(grey[:, None], (1, 1, 1, 1), mode="reflect")[:, 0]  # reflect = OpenCV's reflect-101
    rows = (g[:, :, :-2] + g[:, :, 2:]).add_(g[:, :, 1:-1], alpha=2)
    total = (rows[:, :-2] + rows[:, 2:]).add_(rows[:, 1:-1], alpha=2)  # integers below 2^13: exact in float32
    return total.add_(8).div_(16).floor_()


def fine_grained_saliency(levels: torch.Tensor, *, channels: str = "rgb", backend: str = "auto") -> torch.Tensor:
    """Saliency maps, int32 (N, H, W) in 0..255, of images given as 8-bit levels 0..255:
    (N, 3, H, W) or (N, 1, H, W) grey, integers or float32 holding integers (``to_levels``
    of a normalised batch).

    ``channels``: the order of the three channels, "rgb" (this package's batches) or "bgr"
    (what OpenCV assumes; SaliencyMix's release hands it RGB tensors, so its grey level
    weighs red as blue). ``backend``: the centre-surround kernel's (``kernels.centre_surround``;
    "reference" for its torch version)."""
    if levels.dim() != 4 or levels.shape[1] not in (1, 3) or levels.is_complex() or levels.dtype == torch.bool:
        raise ValueError(f"levels must be an (N, 3 or 1, H, W) tensor of 8-bit levels 0..255, got {levels.dtype} of "
                         f"shape {tuple(levels.shape)}")
    if channels not in ("rgb", "bgr"):
        raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    n, c, h, w = levels.shape
    if h < 2 or w < 2:
        raise ValueError(f"fine-grained saliency needs images of at least 2 x 2 pixels, got {h} x {w}")
    # every step below on integers under 2^24 in float32: exact, so the same on every device
    x = levels.float()
    if c == 3:
        r, g, b = (x[:, 0], x[:, 1], x[:, 2]) if channels == "rgb" else (x[:, 2], x[:, 1], x[:, 0])
        grey = (r * _LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).add_(1 << 14).mul_(2.0 ** -15).floor_()
    else:
        grey = x[:, 0]
    grey = _smooth(_smooth(grey)).contiguous()
    # the integral image (N, H + 1, W + 1): exact in float64, then float32 as OpenCV keeps
    # it (equal below 2^24)
    integral = F.pad(grey, (1, 0, 1, 0)).cumsum(1, dtype=torch.float64).cumsum_(2).float()
    return kernels.centre_surround(integral, grey, scales=FINE_GRAINED_SCALES, backend=backend)


# ---------------------------------------------------------------- spectral residual


def check_smoothing(kernel: int, sigma: float) -> int:
    """``kernel``, refused unless 0 (no smoothing) or odd and positive, with sigma > 0."""
    if kernel < 0 or (kernel and kernel % 2 == 0) or not sigma > 0:
        raise ValueError(f"kernel must be 0 or odd and positive and sigma > 0, got kernel={kernel}, sigma={sigma}")
    return kernel


def smooth(maps: torch.Tensor, *, kernel: int = 7, sigma: float = 3.0) -> torch.Tensor:
    """Gaussian smoothing of (N, H, W) maps with torchvision's ``GaussianBlur((k, k), (sigma,
    sigma))`` kernel and reflect padding, applied as two 1-D passes (torchvision convolves
    with the k x k outer product: 4.5x the work here for k = 7, the same sums up to float32
    rounding, tested); ``kernel`` 0: unchanged."""
    if check_smoothing(kernel, sigma) == 0:
        return maps
    half = (kernel - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel, dtype=torch.float32, device=maps.device)
    k1 = torch.exp(-0.5 * (x / sigma).pow(2))
    k1 = k1 / k1.sum()  # torchvision's _get_gaussian_kernel1d
    r, n = kernel // 2, maps.shape[0]
    # the maps as the channels of one image: a depthwise convolution, which oneDNN runs fast
    m = F.pad(maps[None].float(), (r, r, r, r), mode="reflect")
    m = F.conv2d(m, k1.view(1, 1, 1, kernel).expand(n, 1, 1, kernel), groups=n)
    return F.conv2d(m, k1.view(1, 1, kernel, 1).expand(n, 1, kernel, 1), groups=n)[0]


def normalise_sum(maps: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """Each (H, W) map over its sum, so that it sums to 1 (GuidedMixup's "sumto1"); a map
    whose sum is below ``eps`` (all zero) stays zero instead of becoming NaN."""
    return maps / maps.sum((-2, -1), keepdim=True).clamp_min(eps)


def spectral_residual(images: torch.Tensor, *, size_cap: int = 128, kernel: int = 7, sigma: float = 3.0,
                      eps: float = 1e-10) -> torch.Tensor:
    """Spectral residual saliency (Hou and Zhang, "Saliency Detection: A Spectral Residual
    Approach", CVPR 2007, Eq. 5-9), float32 (N, H, W), as GuidedMixup's release computes it
    (``Utils/spectral_residual.py``), batched: the grey level of the (normalised) images
    (torchvision's luma); resized to size_cap x size_cap if taller than size_cap; the 2-D
    FFT; the log amplitude A = log sqrt(re^2 + im^2 + eps) minus its 3 x 3 mean (replicate
    borders) as the residual R; the spectrum scaled by exp(R) / amplitude (its phase kept);
    the inverse FFT's magnitude (Hou and Zhang square it; the release does not); a Gaussian
    smoothing (``kernel``, ``sigma``); resized back."""
    if images.dim() != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
        raise ValueError(f"images must be a float (N, 3 or 1, H, W) tensor, got {images.dtype} of shape "
                         f"{tuple(images.shape)}")
    from torchvision.transforms.functional import resize, rgb_to_grayscale

    n, c, h, w = images.shape
    grey = rgb_to_grayscale(images.float()) if c == 3 else images.float()
    if h > size_cap:  # the release tests the height and makes the map square
        grey = resize(grey, [size_cap, size_cap], antialias=True)
    freq = torch.fft.fft2(grey[:, 0])
    amplitude = (freq.real ** 2 + freq.imag ** 2 + eps).sqrt()
    log_a = amplitude.log()
    box = F.avg_pool2d(F.pad(log_a[:, None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0]
    freq = freq * ((log_a - box).exp() / amplitude)
    sal = smooth(torch.fft.ifft2(freq).abs(), kernel=kernel, sigma=sigma)
    if h > size_cap:  # upsampling: torchvision's resize is plain bilinear here, antialias or not
        sal = F.interpolate(sal[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return sal


# ---------------------------------------------------------------- input gradient


def input_gradient(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, bn: str = "train") -> torch.Tensor:
    """Input-gradient saliency, float32 (N, H, W): the channel-wise RMS of the gradient of the
    batch's mean cross-entropy with respect to the input, sqrt(mean_c (dL/dx)^2), as
    PuzzleMix, Co-Mixup and GuidedMixup's Guided-AP define it: one forward and backward of
    the clean batch.

    Only the input's gradient is computed (``torch.autograd.grad``): the model's parameters
    get none, as the releases leave them after zeroing theirs (their ``clean_lam`` 0), and
    the backward skips the weight gradients. ``bn``: "train" (GuidedMixup's release: the
    pass runs in train mode, so BatchNorm's running statistics see the clean batch) or
    "eval" (PuzzleMix and Co-Mixup with ``clean_lam`` 0, and OpenMixup: they do not). The
    model's mode is restored either way."""
    if bn not in ("train", "eval"):
        raise ValueError(f"bn must be 'train' or 'eval', got {bn!r}")
    was_training = model.training
    model.train(bn == "train")
    try:
        x = images.detach().float().requires_grad_(True)
        with torch.enable_grad():
            out = model(x)
            if isinstance(out, tuple) and not hasattr(out, "logits"):  # MidLevel: (backbone output, branch)
                out = out[0]
            out = getattr(out, "logits", out)  # torchvision Inception's train-mode outputs
            (grad,) = torch.autograd.grad(F.cross_entropy(out.float(), labels.to(out.device)), x)
    finally:
        model.train(was_training)
    return grad.pow(2).mean(1).sqrt()
