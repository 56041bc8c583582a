"""Sample grids: what a mixing method did to one batch, for a person to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import kernels
from .data.spec import unnormalise
from .kernels.spm_box_mass import spm_reference
from .mix.base import MixedBatch
from .mix.comixup import CoMixMaskParams
from .mix.params import BlendParams, BoxParams, MaskParams, pixel_weights
from .mix.ricap import RICAPParams

__all__ = ["save_sample_grid"]


def _unnormalise(images: torch.Tensor, mean, std) -> np.ndarray:
    return unnormalise(images.cpu(), mean, std).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _rect(ax, box, **kw) -> None:
    import matplotlib.patches as patches

    y0, y1, x0, x1 = (int(v) for v in box)
    if y1 > y0 and x1 > x0:
        ax.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, **kw))


def save_sample_grid(path: str | Path, *, out: MixedBatch, params, mean, std,
                     cam: torch.Tensor | None = None, parts: torch.Tensor | None = None,
                     truth=None, n: int = 8, title: str = "", show_masks: bool = False) -> None:
    """One block per sample: the mixed image (captioned ``label:weight`` for each of its labels), with the
    pasted box or a mask's 0.5 level (white, dashed) and, where ``parts`` (N, H, W) coverage of the clean crops
    is known, the outline of the class-deciding parts the mixed image shows (green: taken
    through the same paste, mask or blend; truth t_a / t_b in the caption). With
    SnapMix's ``cam``, two more panels: the SPM of the sample (its target box) and of its
    partner (its source box), as heat maps in multiples of a uniform map, one colour bar.
    ``show_masks`` (a learned mask, AutoMix's): beside each sample its mask, the own
    image's weight per pixel (black 0, white 1), captioned with its mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(out.images))
    boxes = isinstance(params, BoxParams) and params.mix
    perm = params.perm.cpu() if isinstance(params, BoxParams) else torch.arange(len(out.images))
    mixed = _unnormalise(out.images[:n], mean, std)
    h, w = mixed.shape[1:3]
    shown = None
    if parts is not None and not isinstance(params, RICAPParams):  # its regions come from four other crops
        shown = parts.float()[:, None].clone()
        if boxes:  # the parts as the mixed image shows them: the same paste, applied to the masks
            kernels.paste_resized(shown, perm=params.perm, src_box=params.src_box, dst_box=params.dst_box,
                                  align_corners=True, backend="reference")
        elif isinstance(params, (MaskParams, BlendParams)) and params.mix:  # the same mask or blend
            m = pixel_weights(params, height=shown.shape[2], width=shown.shape[3]).float()[:, None]
            # where each image shows (PuzzleMix's transport moves blocks first), then the blend
            shown = m * params.move(shown, "a") + (1 - m) * params.move(shown[params.perm], "b")
        elif isinstance(params, CoMixMaskParams) and params.mix:  # the group's parts, block by block as the images
            shown = params.combine(shown)
        shown = shown[:, 0].numpy()
    own = None  # a per-pixel mask's own-image weights
    if isinstance(params, MaskParams) and params.mix and params.masks.dim() == 3:
        own = params.masks[:n].cpu().float().numpy()
    outline = None  # the mask's 0.5 level (where the partner takes over), dashed, where it is a few clean lines
    if own is not None:
        above = own >= 0.5
        edges = float((above[:, 1:] != above[:, :-1]).mean() + (above[:, :, 1:] != above[:, :, :-1]).mean())
        if edges < 0.05:  # not the random rows, columns, pixels and elements: speckle
            outline = own
    level = 0.5 if boxes else 0.45  # where the image shows at least about half of a part (a blend's 0.5 too)
    maps = spm_reference(cam.cpu(), image_size=(h, w)).numpy() * (h * w) if cam is not None else None
    masks = own if show_masks else None
    per = 3 if maps is not None else 2 if masks is not None else 1
    cols = 2 if maps is not None else 4
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols * per, figsize=(2.2 * cols * per + (1.0 if maps is not None else 0), 2.45 * rows),
                             squeeze=False, layout="constrained")
    vmax = float(np.nanpercentile(maps, 99.5)) if maps is not None and np.isfinite(maps).any() else 1.0
    im = None
    for i in range(rows * cols):
        block = axes[i // cols, (i % cols) * per:(i % cols + 1) * per]
        for ax in block:
            ax.set_axis_off()
        if i >= n:
            continue
        j = int(perm[i])
        ax = block[0]
        ax.imshow(mixed[i], interpolation="nearest")
        # y_a:w_a y_b:w_b (both, even a zero); of more labels (RICAP, Co-Mixup's group) those that weigh
        pairs = [(int(y), float(w)) for y, w in zip(out.labels[i], out.weights[i]) if out.labels.shape[1] <= 2 or w > 0]
        cap = " ".join(f"{y}:{w:.2f}" for y, w in pairs)
        if boxes:
            _rect(ax, params.dst_box[i], edgecolor="white", linestyle="--", linewidth=1)
        if outline is not None and outline[i].min() < 0.5 < outline[i].max():
            ax.contour(outline[i], levels=[0.5], colors="white", linestyles="--", linewidths=1)
        if shown is not None and shown[i].max() >= level:
            ax.contour(shown[i], levels=[level], colors="lime", linewidths=0.8)
        if truth is not None and bool(truth.keep[i]):
            # shares are >= 0: a -1e-17 from rounding would print as "-0.00"
            cap += f"\ntruth {max(0.0, float(truth.t_a[i])):.2f} {max(0.0, float(truth.t_b[i])):.2f}"
        ax.set_title(cap, fontsize=8)
        if masks is not None:
            block[1].imshow(masks[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            block[1].set_title(f"own weight, mean {masks[i].mean():.2f}", fontsize=8)
        if maps is not None:
            for ax, k, box, name in ((block[1], i, params.dst_box[i] if boxes else None, "SPM"),
                                     (block[2], j, params.src_box[i] if boxes else None, f"partner {j} SPM")):
                im = ax.imshow(maps[k], cmap="inferno", vmin=0, vmax=vmax, interpolation="bilinear")
                if box is not None:
                    _rect(ax, box, edgecolor="cyan", linewidth=1)
                if parts is not None and float(parts[k].max()) >= 0.5:
                    ax.contour(parts[k].numpy(), levels=[0.5], colors="lime", linewidths=0.6)
                ax.set_title(name, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.5, label="SPM / uniform (1 = average pixel)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)
