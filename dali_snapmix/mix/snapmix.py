"""SnapMix: semantically proportional mixing (Huang, Wang, Tao, AAAI 2021).

Eq. 3: a box of the partner image, resized, is pasted into a (different) box of the
image. Eq. 4: the CAM of each sample's own class. Eq. 5: the semantic percent map (SPM)
= the CAM upsampled to the image, minus its minimum, over its sum. Eq. 6: the label
weights rho_a = 1 - SPM_a(target box), rho_b = SPM_b(source box); they need not sum
to 1.

Details the paper leaves open follow the authors' released code
(../shared/reference/snapmix.md): with probability ``prob`` the batch is mixed; one
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

from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import kernels
from ..kernels._target import nvtx_range
from .base import MixedBatch, MixMethod, check_beta, check_prob
from .boxes import box_area
from .cam import CAMHead, cams_from_features, class_activation_maps, feature_module
from .cam_cache import CAMCache
from .cutmix import paste, sample_box_params
from .params import BoxParams

__all__ = ["SnapMix"]

_SEMANTICS = {
    "released": {"per_sample_boxes": False, "self_pairs": True, "cam_mode": "train"},
    "improved": {"per_sample_boxes": True, "self_pairs": False, "cam_mode": "eval"},
}


class SnapMix(MixMethod):
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
        self.cam_mode = d["cam_mode"] if cam_mode is None else cam_mode
        if self.cam_mode not in ("train", "eval"):
            raise ValueError(f"cam_mode must be 'train' or 'eval', got {cam_mode!r}")
        self.symmetric = bool(symmetric)  # Fig. 3: symmetric boxes with semantic labels
        if not isinstance(cam_resolution, (int, float)) or not 0.0 < cam_resolution <= 1.0:
            raise ValueError(f"cam_resolution must be in (0, 1], got {cam_resolution!r}")
        self.cam_resolution = float(cam_resolution)
        if cache is not None and not isinstance(cache, CAMCache):
            raise ValueError(f"cache must be a CAMCache, got {type(cache).__name__}")
        self.cache = cache
        self._armed: tuple | None = None  # a clean batch whose training forward refreshes the cache
        self._hooked: tuple[nn.Module, object] | None = None
        self.cache_stats = {"exact": 0, "cached": 0, "free": 0}  # samples, for logs and benchmarks
        if channels_last not in (None, True, False):
            raise ValueError(f"channels_last must be None, True or False, got {channels_last!r}")
        self.cam_head, self.autocast, self.channels_last = cam_head, bool(autocast), channels_last
        self._found: tuple[nn.Module, CAMHead] | None = None
        self.last_cam: torch.Tensor | None = None
        self.name = "snapmix"

    def sample(self, images: torch.Tensor, labels: torch.Tensor) -> BoxParams:
        n = images.shape[0]
        perm = None
        if not self.self_pairs:
            perm = self._derangement(n)
        p = sample_box_params(self, images, prob=self.prob, beta=self.beta, asymmetric=not self.symmetric,
                              per_sample=self.per_sample_boxes, perm=perm)
        if perm is not None and n == 1:  # a single sample has no partner but itself
            p = BoxParams(mix=False, perm=p.perm, src_box=p.src_box, dst_box=p.dst_box)
        return p

    def _derangement(self, n: int) -> torch.Tensor:
        if n == 1:
            return torch.zeros(1, dtype=torch.int64)
        while True:  # rejection: about e tries on average
            p = self.permutation(n)
            if not bool((p == torch.arange(n)).any()):
                return p

    def state_dict(self) -> dict:
        """The CAM cache and the per-source counters: with them a resumed cached-mode run
        finds the same maps fresh and continues bit for bit."""
        return {"cache_stats": dict(self.cache_stats), "cache": None if self.cache is None else self.cache.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if (state.get("cache") is None) != (self.cache is None):
            raise ValueError(f"the saved SnapMix state {'has' if state.get('cache') is not None else 'has no'} CAM cache "
                             f"but this SnapMix {'has' if self.cache is not None else 'has none'}")
        self.cache_stats = dict(state["cache_stats"])
        if self.cache is not None:
            self.cache.load_state_dict(state["cache"])

    def head(self, model: nn.Module) -> CAMHead:
        if self.cam_head is not None:
            return self.cam_head
        if self._found is None or self._found[0] is not model:  # found once per model object
            self._found = (model, CAMHead.of(model))
        return self._found[1]

    def cam_input(self, images: torch.Tensor) -> torch.Tensor:
        """The batch as the CAM pass sees it: downscaled in the low-resolution mode, and
        channels_last where that is the faster layout. On the CPU (oneDNN) a no-grad
        forward of an NCHW model takes channels_last input 1.3-1.5x faster (ResNet-18/50,
        EfficientNet-Lite0, the built-in CNN; CAMs equal to 4e-6 relative), so
        ``channels_last=None`` uses it there; on CUDA only when asked (not measured here)."""
        x = images
        if self.cam_resolution < 1.0:  # low-resolution mode: same field of view, fewer pixels
            x = F.interpolate(x, scale_factor=self.cam_resolution, mode="bilinear", align_corners=False,
                              antialias=True, recompute_scale_factor=False)
        last = x.device.type == "cpu" if self.channels_last is None else self.channels_last
        return x.contiguous(memory_format=torch.channels_last) if last else x

    @torch.no_grad()
    def exact_cams(self, images: torch.Tensor, labels: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """The CAM pass on the clean batch (before any paste)."""
        head = self.head(model)
        was_training = model.training
        if self.cam_mode == "eval":
            model.eval()
        try:
            x = self.cam_input(images)
            ctx = torch.autocast(images.device.type, dtype=torch.bfloat16) if self.autocast else nullcontext()
            with ctx, nvtx_range(f"{self.name}/cam"):
                return class_activation_maps(head, x, labels)
        finally:
            model.train(was_training)

    def cams(self, images: torch.Tensor, labels: torch.Tensor, model: nn.Module, geometry=None) -> torch.Tensor:
        """Each sample's CAM for its current crop: from the cache where it holds a fresh
        map, else from an exact pass over just the samples that need one."""
        if self.cache is None:
            cam = self.exact_cams(images, labels, model)
            self.cache_stats["exact"] += len(cam)
        else:
            idx, win, flip = self._geometry(geometry, len(images))
            fresh = self.cache.fresh(idx, self.epoch).to(images.device)
            need = (~fresh).nonzero()[:, 0]
            exact = self.exact_cams(images[need], labels[need], model) if len(need) else None
            if exact is not None:
                self.cache.store(idx[need.cpu()], exact, win[need.cpu()], flip[need.cpu()], self.epoch)
            if len(need) == len(images):
                cam = exact
            else:
                with nvtx_range(f"{self.name}/cam_reproject"):
                    cam = self.cache.project(idx, win, flip).to(images.device)
                if exact is not None:  # onto the projection's finer grid, as the cached maps are
                    cam[need] = F.interpolate(exact[:, None].to(cam.dtype), size=cam.shape[1:], mode="bilinear",
                                              align_corners=False)[:, 0]
            self.cache_stats["exact"] += len(need)
            self.cache_stats["cached"] += len(images) - len(need)
        self.last_cam = cam  # kept for sample grids
        return cam

    @staticmethod
    def _geometry(geometry, n: int):
        missing = [k for k in ("indices", "window", "flip") if not hasattr(geometry, k)]
        if geometry is None or missing:
            raise ValueError("SnapMix with a CAM cache needs geometry=<the loader's Batch> (indices, window, flip); "
                             f"got {type(geometry).__name__}" + (f" without {missing}" if geometry is not None else ""))
        idx = geometry.indices.to("cpu", torch.int64)
        if idx.shape != (n,):
            raise ValueError(f"geometry.indices has shape {tuple(idx.shape)} for a batch of {n}")
        return idx, geometry.window.cpu(), geometry.flip.cpu()

    def _arm(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, geometry) -> None:
        """Catch the feature map of the training forward that follows this unmixed batch."""
        if self._hooked is None or self._hooked[0] is not model:
            if self._hooked is not None:
                self._hooked[1].remove()
            fm = feature_module(model, self.head(model), images[:1])
            if fm is None:
                raise ValueError(f"cannot find the module of {type(model).__name__} whose output is the CAM feature map, "
                                 f"so unmixed batches cannot refresh the CAM cache; use prob=1 or a model whose "
                                 f"feature map is a submodule's output")
            self._hooked = (model, fm.register_forward_hook(self._catch))
        idx, win, flip = self._geometry(geometry, len(images))
        self._armed = (model, len(images), labels.to(images.device, torch.int64), idx, win, flip, self.epoch)

    def _catch(self, module, inputs, feats) -> None:
        armed, self._armed = self._armed, None  # one shot
        if armed is None:
            return
        model, n, labels, idx, win, flip, epoch = armed
        if not model.training or not isinstance(feats, torch.Tensor) or feats.shape[0] != n:
            return  # not the training forward of the armed batch
        with torch.no_grad():
            cam = cams_from_features(self.head(model).classifier, feats, labels)
        if bool(torch.isfinite(cam).all()):
            self.cache.store(idx, cam, win, flip, epoch)
            self.cache_stats["free"] += n

    def _apply(self, images, labels, params: BoxParams, *, model=None, backend: str = "auto",
              geometry=None) -> MixedBatch:
        n, _, h, w = images.shape
        dev = images.device
        y = labels.to(dev, torch.int64)
        perm = params.perm.to(dev)
        live = params.live
        self._armed = None
        if not params.mix or not bool(live.any()):
            if self.cache is not None and model is not None and geometry is not None and model.training:
                self._arm(model, images, y, geometry)
            return self.unmixed(images, labels, y_b=y[perm])
        if model is None:
            raise ValueError("SnapMix needs the model (its CAMs give the label weights): call it with model=...")
        cam = self.cams(images, y, model, geometry)
        # masses of the partner's SPM are read from the partner's CAM: no second pass
        cams_ab = torch.stack([cam, cam[perm]], dim=1).reshape(2 * n, *cam.shape[1:])
        boxes_ab = torch.stack([params.dst_box, params.src_box], dim=1).reshape(2 * n, 1, 4)
        mass = kernels.spm_box_mass(cams_ab, boxes_ab, image_size=(h, w), backend=backend, tag=self.name).view(n, 2)
        paste(images, params, backend=backend, tag=self.name)
        # the released code divides by the SPM's sum + 1e-8; the SPM sums to 1
        rho_a = 1.0 - mass[:, 0] / (1.0 + 1e-8)
        rho_b = mass[:, 1] / (1.0 + 1e-8)
        y_b = y[perm]
        same = y == y_b
        rho_a, rho_b = torch.where(same, rho_a + rho_b, rho_a), torch.where(same, rho_b + rho_a, rho_b)
        lam = 1.0 - box_area(params.dst_box).to(dev).double() / (h * w)  # area fallback
        rho_a = torch.where(rho_a.isnan(), lam, rho_a)
        rho_b = torch.where(rho_b.isnan(), 1.0 - lam, rho_b)
        own = perm == torch.arange(n, device=dev)
        rho_a = torch.where(own, torch.ones_like(rho_a), rho_a)
        rho_b = torch.where(own, torch.zeros_like(rho_b), rho_b)
        livd = live.to(dev)  # per-sample boxes: a sample with an empty box is not mixed
        rho_a = torch.where(livd, rho_a, torch.ones_like(rho_a))
        rho_b = torch.where(livd, rho_b, torch.zeros_like(rho_b))
        return MixedBatch(images, y, y_b, rho_a.float(), rho_b.float())
