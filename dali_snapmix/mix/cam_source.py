"""Where a mixing method gets each sample's class activation map for the current batch.

A method asks its source for "the maps for this batch" (``maps``) and does not know
which source serves them:

* :class:`ExactCAMs`: a CAM pass of the model on the clean batch (under no_grad, in
  train or eval mode). With ``resolution < 1`` the pass runs on a downscaled copy (the
  low-resolution mode: same field of view, fewer pixels, about ``resolution**2`` of the
  forward's cost).
* :class:`CachedCAMs`: each sample's map kept in source-image coordinates
  (:class:`~dali_snapmix.mix.cam_cache.CAMCache`) and re-projected into its current crop;
  an exact pass only for samples whose map is missing or stale. A batch the method
  leaves unmixed refreshes its samples' maps for free: ``unmixed`` arms a hook that
  turns the training forward's own feature map into CAMs.

Every source counts the samples it served per origin (``stats``: exact, cached, free).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import kernels
from ..data.spec import CropGeometry
from .cam import CAMHead, cams_from_features, class_activation_maps, feature_module
from .cam_cache import CAMCache

__all__ = ["CachedCAMs", "ExactCAMs"]


def _counts() -> dict[str, int]:
    return {"exact": 0, "cached": 0, "free": 0}


class ExactCAMs:
    """The CAM pass. ``head``: where the model's feature map and classifier are (found
    with :meth:`CAMHead.of` when None); ``mode``: the model's mode during the pass
    ("train": BatchNorm uses and updates batch statistics, as the released SnapMix);
    ``resolution``: the side of the pass's input as a share of the crop's; ``autocast``:
    bf16 autocast on the batch's device; ``channels_last``: the pass's input layout
    (None: channels_last on the CPU only, where oneDNN runs a no-grad NCHW model
    1.3-1.5x faster on it, CAMs equal to 4e-6 relative; on CUDA only when asked)."""

    def __init__(self, *, head: CAMHead | None = None, mode: Literal["train", "eval"] = "train",
                 resolution: float = 1.0, autocast: bool = False, channels_last: bool | None = None,
                 tag: str = "snapmix") -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"cam_mode must be 'train' or 'eval', got {mode!r}")
        if not isinstance(resolution, (int, float)) or not 0.0 < resolution <= 1.0:
            raise ValueError(f"cam_resolution must be in (0, 1], got {resolution!r}")
        if channels_last not in (None, True, False):
            raise ValueError(f"channels_last must be None, True or False, got {channels_last!r}")
        self.head, self.mode, self.resolution = head, mode, float(resolution)
        self.autocast, self.channels_last, self.tag = bool(autocast), channels_last, tag
        self._found: tuple[nn.Module, CAMHead] | None = None
        self.stats = _counts()

    def head_of(self, model: nn.Module) -> CAMHead:
        if self.head is not None:
            return self.head
        if self._found is None or self._found[0] is not model:  # found once per model object
            self._found = (model, CAMHead.of(model))
        return self._found[1]

    def input(self, images: torch.Tensor) -> torch.Tensor:
        """The batch as the pass sees it: downscaled (antialiased bilinear) below full
        resolution, and in the pass's memory layout."""
        x = images
        if self.resolution < 1.0:
            x = F.interpolate(x, scale_factor=self.resolution, mode="bilinear", align_corners=False,
                              antialias=True, recompute_scale_factor=False)
        last = x.device.type == "cpu" if self.channels_last is None else self.channels_last
        return x.contiguous(memory_format=torch.channels_last) if last else x

    @torch.no_grad()
    def exact(self, images: torch.Tensor, labels: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """(N, h, w) float64 CAMs of each sample's own class, from the pass (not counted)."""
        head = self.head_of(model)
        was_training = model.training
        if self.mode == "eval":
            model.eval()
        try:
            x = self.input(images)
            ctx = torch.autocast(images.device.type, dtype=torch.bfloat16) if self.autocast else nullcontext()
            with ctx, kernels.nvtx_range(f"{self.tag}/cam"):
                return class_activation_maps(head, x, labels)
        finally:
            model.train(was_training)

    def maps(self, images: torch.Tensor, labels: torch.Tensor, model: nn.Module, geometry=None) -> torch.Tensor:
        """The maps for this batch (``geometry`` is not needed)."""
        cam = self.exact(images, labels, model)
        self.stats["exact"] += len(cam)
        return cam

    def unmixed(self, model: nn.Module | None, images: torch.Tensor, labels: torch.Tensor, geometry) -> None:
        """Told that this batch goes to training unmixed: nothing to do without a cache."""

    def state_dict(self) -> dict:
        return {"cache_stats": dict(self.stats), "cache": None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("cache") is not None:
            raise ValueError("the saved SnapMix state has CAM cache but this SnapMix has none")
        self.stats = dict(state["cache_stats"])


class CachedCAMs:
    """Maps from ``cache`` where fresh, re-projected into each sample's current crop;
    the rest from ``exact`` (and stored). Needs each batch's :class:`CropGeometry`."""

    def __init__(self, *, exact: ExactCAMs, cache: CAMCache) -> None:
        if not isinstance(cache, CAMCache):
            raise ValueError(f"cache must be a CAMCache, got {type(cache).__name__}")
        self.exact, self.cache = exact, cache
        self.epoch = 0
        self.stats = _counts()
        self._armed: tuple | None = None  # a clean batch whose training forward refreshes the cache
        self._hooked: tuple[nn.Module, object] | None = None

    def maps(self, images: torch.Tensor, labels: torch.Tensor, model: nn.Module, geometry=None) -> torch.Tensor:
        self._armed = None  # a mixed batch: its training forward shows pasted images
        g = CropGeometry.of(geometry, n=len(images))
        fresh = self.cache.fresh(g.indices, self.epoch).to(images.device)
        need = (~fresh).nonzero()[:, 0]
        now = self.exact.exact(images[need], labels[need], model) if len(need) else None
        if now is not None:
            on = need.cpu()
            self.cache.store(g.indices[on], now, g.window[on], g.flip[on], self.epoch)
        self.stats["exact"] += len(need)
        self.stats["cached"] += len(images) - len(need)
        if len(need) == len(images):
            return now
        with kernels.nvtx_range(f"{self.exact.tag}/cam_reproject"):
            cam = self.cache.project(g.indices, g.window, g.flip).to(images.device)
        if now is not None:  # onto the projection's finer grid, as the cached maps are
            cam[need] = F.interpolate(now[:, None].to(cam.dtype), size=cam.shape[1:], mode="bilinear",
                                      align_corners=False)[:, 0]
        return cam

    def unmixed(self, model: nn.Module | None, images: torch.Tensor, labels: torch.Tensor, geometry) -> None:
        """Catch the feature map of the training forward that follows this unmixed batch
        (one shot), when the model is given and trains and the batch's geometry is known;
        any earlier arming is dropped either way."""
        self._armed = None
        if model is None or geometry is None or not model.training:
            return
        if self._hooked is None or self._hooked[0] is not model:
            if self._hooked is not None:
                self._hooked[1].remove()
            fm = feature_module(model, self.exact.head_of(model), images[:1])
            if fm is None:
                raise ValueError(f"cannot find the module of {type(model).__name__} whose output is the CAM feature map, "
                                 f"so unmixed batches cannot refresh the CAM cache; use prob=1 or a model whose "
                                 f"feature map is a submodule's output")
            self._hooked = (model, fm.register_forward_hook(self._catch))
        g = CropGeometry.of(geometry, n=len(images))
        self._armed = (model, len(images), labels, g, self.epoch)

    def _catch(self, module, inputs, feats) -> None:
        armed, self._armed = self._armed, None
        if armed is None:
            return
        model, n, labels, g, epoch = armed
        if not model.training or not isinstance(feats, torch.Tensor) or feats.shape[0] != n:
            return  # not the training forward of the armed batch
        with torch.no_grad():
            cam = cams_from_features(self.exact.head_of(model).classifier, feats, labels)
        if bool(torch.isfinite(cam).all()):
            self.cache.store(g.indices, cam, g.window, g.flip, epoch)
            self.stats["free"] += n

    def state_dict(self) -> dict:
        return {"cache_stats": dict(self.stats), "cache": self.cache.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("cache") is None:
            raise ValueError("the saved SnapMix state has no CAM cache but this SnapMix has one")
        self.stats = dict(state["cache_stats"])
        self.cache.load_state_dict(state["cache"])
