"""SnapMix: semantically proportional mixing (Huang, Wang, Tao, AAAI 2021).

Eq. 3: a box of the partner image, resized, is pasted into a (different) box of the
image. Eq. 4: the CAM of each sample's own class. Eq. 5: the semantic percent map (SPM)
= the CAM upsampled to the image, minus its minimum, over its sum. Eq. 6: the label
weights rho_a = 1 - SPM_a(target box), rho_b = SPM_b(source box); they need not sum
to 1.

Details the paper leaves open follow the authors' released code
(docs/snapmix_release.md): with probability ``prob`` the batch is mixed; one
box pair per batch from two independent lam ~ Beta(beta, beta); partner
``randperm`` (self-pairs possible); mixed only if both boxes have area > 0; the CAM
pass runs on the clean batch under no_grad with the model in train mode (BatchNorm
uses, and updates, batch statistics); same-label pairs get rho_a + rho_b as both
weights; a NaN weight (constant CAM) falls back to the area ratio. ``semantics=
"released"`` (the default) reproduces that, so results compare with the paper's.

Two deliberate differences: a self-pair (perm[i] == i) is its own class entirely and
gets weights (1, 0), not the doubled same-label weight (listed among the released
code's defects); and when no sample will be mixed (the coin says no, or a box is
empty) the CAM pass is skipped, where the released code runs it anyway and so moves
BatchNorm statistics for nothing.

``cam_resolution=0.5`` is the low-resolution mode: the CAM pass runs on a copy of the
batch downscaled to half the side (antialiased bilinear), about a quarter of the
forward's cost; its smaller CAM covers the same field of view and is upsampled to the
full crop by the SPM as usual. Its labels approximate the exact ones (a coarser map).
With the train-mode CAM pass, BatchNorm statistics then also see the low-res batch.

``cache=CAMCache(size=len(dataset))`` is the cached-CAM mode (``cam_cache.py``): each
sample's CAM is kept in source-image coordinates with the crop it came from and re-
projected into the sample's current crop, so a step pays for an exact pass only for
samples whose map is missing or older than ``refresh_every`` epochs. Needs the loader's
Batch as ``geometry=`` (indices, crop windows, flips). When prob < 1, unmixed batches
refresh their samples' maps for free: the training forward's own feature map is caught
by a hook (on the model's feature module) and turned into CAMs. Cached maps are
stale by up to ``refresh_every`` epochs and twice resampled: a cheaper, older, blurrier
label weight than the exact pass.

``semantics="improved"`` changes three defaults: a box pair per sample (each sample
gets its own ratios, as Mixup/CutMix variants in timm do), no self-pairs, and the CAM
pass in eval mode (BatchNorm statistics untouched by the extra pass). Each can also be
set on its own.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from .. import kernels
from .base import MixedBatch, MixMethod, check_beta, check_prob
from .boxes import area_share
from .cam import CAMHead
from .cam_cache import CAMCache
from .cam_source import CachedCAMs, ExactCAMs
from .params import BoxParams, derangement, paste_boxes, sample_box_params

__all__ = ["SnapMix", "merge_same_label", "snapmix_weights"]

_SEMANTICS = {
    "released": {"per_sample_boxes": False, "self_pairs": True, "cam_mode": "train"},
    "improved": {"per_sample_boxes": True, "self_pairs": False, "cam_mode": "eval"},
}


def merge_same_label(w_a: torch.Tensor, w_b: torch.Tensor, same: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A same-label pair's one class gets both weights' sum, in both places (released code)."""
    return torch.where(same, w_a + w_b, w_a), torch.where(same, w_b + w_a, w_b)


def snapmix_weights(masses: torch.Tensor, params: BoxParams, labels: torch.Tensor, *, height: int,
                    width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 and the released code's rules, as float32 (w_a, w_b) on ``masses``' device.

    ``masses``: float64 (N, 2), the SPM mass of sample i's own map inside its target box
    and of its partner's map inside the source box. rho_a = 1 - mass_a, rho_b = mass_b
    (each over the SPM's sum + 1e-8 as released; the SPM sums to 1); a same-label pair
    gets rho_a + rho_b as both; a NaN weight (a constant CAM) falls back to the area
    ratio of the target box; a self-pair is its own class (1, 0), and so is a sample
    whose boxes are not both live (no paste)."""
    dev = masses.device
    y = labels.to(dev, torch.int64)
    perm = params.perm.to(dev)
    rho_a = 1.0 - masses[:, 0] / (1.0 + 1e-8)
    rho_b = masses[:, 1] / (1.0 + 1e-8)
    rho_a, rho_b = merge_same_label(rho_a, rho_b, y == y[perm])
    lam = 1.0 - area_share(params.dst_box, height, width).to(dev)  # area fallback
    rho_a = torch.where(rho_a.isnan(), lam, rho_a)
    rho_b = torch.where(rho_b.isnan(), 1.0 - lam, rho_b)
    own = (perm == torch.arange(len(perm), device=dev)) | ~params.live.to(dev)
    rho_a = torch.where(own, torch.ones_like(rho_a), rho_a)
    rho_b = torch.where(own, torch.zeros_like(rho_b), rho_b)
    return rho_a.float(), rho_b.float()


class SnapMix(MixMethod):
    """Presets and sampling here; the maps from ``self.source`` (:mod:`.cam_source`), the
    paste from :func:`~.params.paste_boxes`, the weights from :func:`snapmix_weights`."""

    merges_same_label = True  # same-label pairs: both weights are rho_a + rho_b
    params_type = BoxParams

    def __init__(
        self,
        *,
        prob: float = 1.0,
        beta: float = 5.0,
        semantics: Literal["released", "improved"] = "released",
        per_sample_boxes: bool | None = None,
        self_pairs: bool | None = None,
        cam_mode: Literal["train", "eval"] | None = None,
        symmetric: bool = False,
        cam_head: CAMHead | None = None,
        cam_resolution: float = 1.0,
        cache: CAMCache | None = None,
        autocast: bool = False,
        channels_last: bool | None = None,
        num_classes: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        if semantics not in _SEMANTICS:
            raise ValueError(f"semantics must be one of {list(_SEMANTICS)}, got {semantics!r}")
        d = _SEMANTICS[semantics]
        self.prob, self.beta, self.semantics = check_prob(prob), check_beta(beta), semantics
        self.per_sample_boxes = d["per_sample_boxes"] if per_sample_boxes is None else bool(per_sample_boxes)
        self.self_pairs = d["self_pairs"] if self_pairs is None else bool(self_pairs)
        self.symmetric = bool(symmetric)  # Fig. 3: symmetric boxes with semantic labels
        self.name = "snapmix"
        # the CAM pass, and what serves the maps: the pass itself, or the cache backed by it
        self.cam_pass = ExactCAMs(head=cam_head, mode=d["cam_mode"] if cam_mode is None else cam_mode,
                                  resolution=cam_resolution, autocast=autocast, channels_last=channels_last, tag=self.name)
        self.source: ExactCAMs | CachedCAMs = (self.cam_pass if cache is None
                                               else CachedCAMs(exact=self.cam_pass, cache=cache))
        self.last_cam: torch.Tensor | None = None  # the last batch's maps, for sample grids

    @property
    def cam_mode(self) -> str:
        return self.cam_pass.mode

    @property
    def cache(self) -> CAMCache | None:
        return getattr(self.source, "cache", None)

    @property
    def cache_stats(self) -> dict[str, int]:
        """Samples whose maps came from each origin (exact pass, cache, free refresh)."""
        return self.source.stats

    @cache_stats.setter
    def cache_stats(self, value: dict[str, int]) -> None:
        self.source.stats = dict(value)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.source.epoch = self.epoch  # the cache stamps maps with it

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> BoxParams:
        n, _, h, w = images.shape
        perm = None if self.self_pairs else derangement(rng, n)
        p = sample_box_params(rng, n=n, height=h, width=w, prob=self.prob, beta=self.beta,
                              asymmetric=not self.symmetric, per_sample=self.per_sample_boxes, perm=perm)
        if perm is not None and n == 1:  # a single sample has no partner but itself
            p = BoxParams(mix=False, perm=p.perm, src_box=p.src_box, dst_box=p.dst_box)
        return p

    def state_dict(self) -> dict:
        """The CAM cache and the per-source counters: with them a resumed cached-mode run
        finds the same maps fresh and continues bit for bit."""
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)

    def _apply(self, images, labels, params: BoxParams, *, model=None, backend: str = "auto",
               geometry=None) -> MixedBatch:
        n, _, h, w = images.shape
        y = labels.to(images.device, torch.int64)
        perm = params.perm.to(images.device)
        if not params.mix or not bool(params.live.any()):
            self.source.unmixed(model, images, y, geometry)
            return self.unmixed(images, labels, y_b=y[perm])
        if model is None:
            raise ValueError("SnapMix needs the model (its CAMs give the label weights): call it with model=...")
        cam = self.last_cam = self.source.maps(images, y, model, geometry)
        # masses of the partner's SPM are read from the partner's CAM: no second pass
        cams_ab = torch.stack([cam, cam[perm]], dim=1).reshape(2 * n, *cam.shape[1:])
        boxes_ab = torch.stack([params.dst_box, params.src_box], dim=1).reshape(2 * n, 1, 4)
        mass = kernels.spm_box_mass(cams_ab, boxes_ab, image_size=(h, w), backend=backend, tag=self.name).view(n, 2)
        paste_boxes(images, params, backend=backend, tag=self.name)
        w_a, w_b = snapmix_weights(mass, params, y, height=h, width=w)
        return MixedBatch(images, y, y[perm], w_a, w_b)
