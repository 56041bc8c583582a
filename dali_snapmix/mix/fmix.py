"""FMix (Harris, Marcu, Painter, Niranjan, Prugel-Bennett, Hare, "FMix: Enhancing Mixed
Sample Data Augmentation", arXiv 2002.12047, 2020, Sec. 3): a binary mask cut from a
random low-frequency image.

    Z ~ N(0, 1) + i N(0, 1) on the rfft grid,  Z_f <- Z_f / max(f, 1 / max(H, W))^delta
    g = Re(F^-1(Z)), rescaled to [0, 1]
    M = 1 on the top ceil(lam H W) or floor(lam H W) pixels of g (a coin says which), else 0
    x~ = M x_a + (1 - M) x_b,   labels (y_a, y_b) weighted (mean M, 1 - mean M)

Defaults as the paper and its release: decay power delta = 3, lam ~ Beta(1, 1), every
batch mixed (prob 1.0), no soft band (``max_soft`` 0, the release's option: the band of
``2 max_soft H W`` pixels around the cut falls linearly from 1 to 0). As the release: one
mask and one lam per batch, partners by a random permutation; ``per_sample=True`` draws a
mask and a lam per sample. The label is the mask's mean, which the release's sampled lam
equals to within 1 / (H W) (it returns lam).

``spectrum="release"`` reproduces the release's spectrum: it lays the real and the
imaginary draws side by side along the width and reads them all as real coefficients
(``irfftn`` of the reshaped (h, w//2 + 1, 2) array; for odd widths one column more), so
its masks are point-symmetric about the origin (circularly) and their width frequencies
take the decay of half the frequency. ``spectrum="paper"`` (the default) is the complex
spectrum of the equation above.

The mask is sampled on the host (a float64 FFT per mask, as the release does in NumPy) and
blended on the images' device by ``kernels.mask_blend``.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import check_beta, check_prob
from .masks import MaskMethod, mask_params
from .params import MaskParams, coin, permutation

__all__ = ["FMix", "binarise", "low_freq_images"]

SPECTRA = ("paper", "release")


def low_freq_images(noise: np.ndarray, *, height: int, width: int, decay: float, spectrum: str) -> torch.Tensor:
    """float64 (n, H, W) images in [0, 1] from ``noise``, standard normal draws shaped
    (n, H, C, 2) with C the columns the spectrum keeps (``spectrum_columns``)."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(width, dtype=torch.float64)[: spectrum_columns(width, spectrum)]
    scale = (fx * fx + fy * fy).sqrt().clamp_min(1.0 / max(height, width)).pow(-decay)
    z = torch.from_numpy(noise) * scale[..., None]
    if spectrum == "paper":
        g = torch.fft.irfft2(torch.complex(z[..., 0], z[..., 1]), s=(height, width))
    else:  # real and imaginary draws interleaved along the width, all read as real coefficients
        g = torch.fft.irfft2(z.reshape(len(z), height, -1), s=(height, width))
    g = g - g.amin((1, 2), keepdim=True)
    return g / g.amax((1, 2), keepdim=True)


def spectrum_columns(width: int, spectrum: str) -> int:
    """rfft columns of the spectrum: w // 2 + 1 (the release keeps one more for odd widths)."""
    return width // 2 + (2 if spectrum == "release" and width % 2 else 1)


def binarise(g: torch.Tensor, ones: torch.Tensor, *, max_soft: float, lam: torch.Tensor) -> torch.Tensor:
    """float32 (n, H, W) masks: 1 on each image's ``ones[i]`` largest pixels, 0 elsewhere,
    or, with ``max_soft``, a band of 2 * soft pixels around that cut falling linearly from 1
    to 0 (soft = floor(H W min(max_soft, lam, 1 - lam)), as the release)."""
    n, h, w = g.shape
    size = h * w
    flat = g.reshape(n, size)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(size).expand(n, size))
    soft = (size * torch.minimum(lam, 1 - lam).clamp(max=max_soft)).long()
    lo, hi = (ones - soft)[:, None], (ones + soft)[:, None]
    band = 1.0 - (rank - lo).double() / (hi - lo - 1).clamp_min(1).double()  # linspace(1, 0, hi - lo) at rank - lo
    m = torch.where(rank < lo, 1.0, torch.where(rank >= hi, 0.0, band))
    return m.reshape(n, h, w).float()


class FMix(MaskMethod):
    name = "fmix"

    def __init__(self, *, prob: float = 1.0, beta: float = 1.0, decay: float = 3.0, max_soft: float = 0.0,
                 per_sample: bool = False, spectrum: str = "paper", num_classes: int | None = None,
                 seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob, self.beta, self.per_sample = check_prob(prob), check_beta(beta), bool(per_sample)
        if not isinstance(decay, (int, float)) or not decay > 0:
            raise ValueError(f"decay must be > 0, got {decay!r}")
        if not isinstance(max_soft, (int, float)) or not 0.0 <= max_soft <= 0.5:
            raise ValueError(f"max_soft must be in [0, 0.5], got {max_soft!r}")
        if spectrum not in SPECTRA:
            raise ValueError(f"spectrum must be one of {SPECTRA}, got {spectrum!r}")
        self.decay, self.max_soft, self.spectrum = float(decay), float(max_soft), spectrum

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> MaskParams:
        """Draw, in this order: the switch coin, the partners, lam, the spectra's normals
        (n, H, C, 2), the ceil-or-floor coins (one mask, or one per sample)."""
        n, _, height, width = images.shape
        k = n if self.per_sample else 1
        mix = coin(rng, self.prob)
        perm = permutation(rng, n)
        lam = torch.from_numpy(rng.beta(self.beta, self.beta, size=k))
        noise = rng.standard_normal((k, height, spectrum_columns(width, self.spectrum), 2))
        up = torch.from_numpy(rng.random(k) > 0.5)
        g = low_freq_images(noise, height=height, width=width, decay=self.decay, spectrum=self.spectrum)
        ones = torch.where(up, torch.ceil(lam * height * width), torch.floor(lam * height * width)).long()
        masks = binarise(g, ones, max_soft=self.max_soft, lam=lam)
        return mask_params(mix=mix, perm=perm, masks=masks, w_a=masks.double().mean((1, 2)).float())

