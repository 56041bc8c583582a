"""Saliency maps computed on the batch, on whichever device it lives.

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

Batched in torch, integer-exact where OpenCV is: the luma and the smoothing in OpenCV's
fixed point, the window sums from an int64 integral image, the window means in float32 in OpenCV's order
of operations. OpenCV accumulates its integral image in float32, exact while an image's
grey levels sum below 2^24 (every image up to 256 x 256): there the maps are equal bit
for bit (``tests/mix/test_saliency.py`` checks them against OpenCV's own); above that
OpenCV's running sums round on their way and ours round once, so a few pixels in a
thousand of a large map differ, by one level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["FINE_GRAINED_SCALES", "fine_grained_saliency", "to_levels"]

FINE_GRAINED_SCALES = (12, 24, 48, 28, 56, 112)  # OpenCV's neighbourhoods, in its order
_LUMA = (9798, 19235, 3735)  # R, G, B weights of OpenCV's 8-bit RGB -> grey, in 1/2^15


def to_levels(images: torch.Tensor, *, mean, std) -> torch.Tensor:
    """Normalised NCHW floats back to 8-bit levels (int32, 0..255, rounded): the image a
    detector written for 8-bit pictures would have been given."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return ((images.float() * s + m) * 255.0).round().clamp(0, 255).to(torch.int32)


def _smooth(grey: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit GaussianBlur, 3x3, sigma 0 ([1, 2, 1] / 4 each way, reflect-101
    borders): the exact sum / 16, rounded half up."""
    g = F.pad(grey[:, None].float(), (1, 1, 1, 1), mode="reflect")[:, 0]  # reflect = OpenCV's reflect-101
    rows = g[:, :, :-2] + 2 * g[:, :, 1:-1] + g[:, :, 2:]
    total = rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:]  # integers below 2^13: exact in float32
    return torch.floor((total + 8) / 16).to(torch.int32)


def fine_grained_saliency(levels: torch.Tensor, *, channels: str = "rgb") -> torch.Tensor:
    """Saliency maps, int32 (N, H, W) in 0..255, of images given as 8-bit levels: int
    (N, 3, H, W) in 0..255 (``to_levels`` of a normalised batch) or (N, 1, H, W) grey.

    ``channels``: the order of the three channels, "rgb" (this package's batches) or "bgr"
    (what OpenCV assumes; SaliencyMix's release hands it RGB tensors, so its grey level
    weighs red as blue)."""
    if levels.dim() != 4 or levels.shape[1] not in (1, 3) or levels.is_floating_point() or levels.is_complex():
        raise ValueError(f"levels must be an integer (N, 3 or 1, H, W) tensor of 0..255, got {levels.dtype} of shape "
                         f"{tuple(levels.shape)}")
    if channels not in ("rgb", "bgr"):
        raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    n, c, h, w = levels.shape
    if h < 2 or w < 2:
        raise ValueError(f"fine-grained saliency needs images of at least 2 x 2 pixels, got {h} x {w}")
    x = levels.to(torch.int32)
    if c == 3:
        r, g, b = (x[:, 0], x[:, 1], x[:, 2]) if channels == "rgb" else (x[:, 2], x[:, 1], x[:, 0])
        grey = (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2] + (1 << 14)) >> 15
    else:
        grey = x[:, 0]
    grey = _smooth(_smooth(grey))
    # the integral image (N, H + 1, W + 1), exact, then in float32 as OpenCV keeps it (equal
    # below 2^24), edge-padded so that every scale's clipped window corners are slices
    pad = max(FINE_GRAINED_SCALES)
    integral = F.pad(grey.to(torch.int64).cumsum(1).cumsum(2), (1, 0, 1, 0)).float()
    integral = F.pad(integral[:, None], (pad, pad, pad, pad), mode="replicate")[:, 0]
    grey_f = grey.float()
    on = torch.zeros_like(grey_f)
    off = torch.zeros_like(grey_f)
    ys = torch.arange(h, device=grey.device)
    xs = torch.arange(w, device=grey.device)
    for nb in FINE_GRAINED_SCALES:
        lo, hi = pad - nb + 1, pad + nb + 1  # offsets of corners y - nb + 1 and y + nb + 1
        a = integral[:, hi:hi + h, hi:hi + w]
        b = integral[:, lo:lo + h, lo:lo + w]
        c = integral[:, hi:hi + h, lo:lo + w]
        d = integral[:, lo:lo + h, hi:hi + w]
        count = ((ys + nb + 1).clamp(max=h) - (ys - nb + 1).clamp(min=0))[:, None] * \
            ((xs + nb + 1).clamp(max=w) - (xs - nb + 1).clamp(min=0))[None, :]
        # as OpenCV, in float32 and in its order: ((a + b - c - d) - centre) / (count - 1)
        mean = (a + b).sub_(c).sub_(d).sub_(grey_f).div_((count - 1).float())
        diff = mean.neg_().add_(grey_f).trunc_()  # trunc is odd: off's trunc(M - I) = -trunc(I - M)
        on.add_(diff.clamp(min=0))
        off.sub_(diff.clamp_(max=0))
    on8, off8 = _to_255(on), _to_255(off)
    top = torch.maximum(on8.amax((1, 2)), off8.amax((1, 2))).double()[:, None, None]
    val = (on8 + off8).double().mul_(255.0).div_(top).nan_to_num_(0.0, posinf=0.0)  # OpenCV: 0/0 and x/0 end as 0
    return val.to(torch.int32).bitwise_and_(255)  # truncated (values >= 0); the C cast to uchar wraps


def _to_255(total: torch.Tensor) -> torch.Tensor:
    """Each image's sum over the scales scaled by its maximum to 0..255: float32 quotient,
    then times 255 in double and truncated, as OpenCV's mixScales."""
    top = total.amax((1, 2), keepdim=True)
    q = (total / top).nan_to_num(0.0)  # a flat image: 0 / 0 -> 0
    return q.double().mul_(255.0).to(torch.int32)  # truncated: q >= 0
