"""A per-sample cache of class activation maps, kept in source-image coordinates, so
SnapMix can skip its extra forward pass on most steps.

Each dataset index keeps the CAM (feature-map resolution, float32) of the crop it was
computed on, with that crop's window in source-image pixels and its flip flag (the
loader reports both). When the sample comes back with a different crop, the map is
re-projected: every cell centre of the new crop's CAM grid is mapped to source pixels,
then into the stored crop, and the stored map is sampled there bilinearly
(``grid_sample``, align_corners=False: the convention the SPM upsampling uses). Cells
that fall outside the stored crop get the stored map's minimum, so after SnapMix's
min-shift they carry no semantic mass: nothing is known about them.

Re-projection resamples the map a second time (the SPM upsamples it again), so a
re-projected map is a slightly smoothed version of the ideal "upsample, then crop"
map. Projecting onto a grid ``project_scale`` times finer than the feature map (default
4) halves that error per doubling at no real cost (the SPM box masses stay separable
sums over a 28x28 map): on white-noise 7x7 maps, the worst SPM box mass error against
upsample-then-crop is typically 0.05 at scale 1, 0.027 at 2 and 0.012 at 4 (worst of
40 draws: 0.067 at 1, 0.028 at 4)
(``tests/mix/test_cam_cache.py`` checks it).

Under DDP each process caches the maps of the samples it saw, and every epoch deals
the samples out afresh, so a process would find only about 1 / world of its next
epoch's samples in its own cache. ``sync()`` (a collective, once per epoch in the
trainer) all-gathers the entries each process stored since the last call, so every
process holds every map and the share of exact passes is that of one process. Each
sample is seen once per epoch, so a sync per epoch loses no hit that one per step
would have given.

Memory: h * w * 4 bytes + 28 bytes of geometry per sample: 7x7 maps (224 crops,
ResNet) take 224 B, 14x14 (448 crops) 812 B; CUB-200's 5994 training images need
1.3 MB and 4.9 MB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["CAMCache", "reproject"]


def _crop_coords(n_cells: int, lo: torch.Tensor, hi: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
    """Source-pixel coordinate of each cell centre of a crop spanning [lo, hi): (n, cells)."""
    t = (torch.arange(n_cells, dtype=torch.float64, device=lo.device) + 0.5) / n_cells
    t = t.expand(lo.shape[0], n_cells)
    if flip is not None:  # the crop was mirrored after cropping: its cell j shows source 1 - t
        t = torch.where(flip[:, None], 1.0 - t, t)
    return lo[:, None] + t * (hi - lo)[:, None]


def reproject(cam: torch.Tensor, src_window: torch.Tensor, src_flip: torch.Tensor,
              dst_window: torch.Tensor, dst_flip: torch.Tensor, *, size: tuple[int, int]) -> torch.Tensor:
    """Re-project (n, h, w) maps computed on crops ``src_window``/``src_flip`` onto crops
    ``dst_window``/``dst_flip`` (windows (n, 4) as (y0, y1, x0, x1) in source pixels), as
    (n, size[0], size[1]) float64 maps; cells outside the source crop get its minimum."""
    n = cam.shape[0]
    sw, dw = src_window.double(), dst_window.double()
    ys = _crop_coords(size[0], dw[:, 0], dw[:, 1], None)  # flips are horizontal only
    xs = _crop_coords(size[1], dw[:, 2], dw[:, 3], dst_flip)
    # into the stored crop's normalised frame [0, 1], then its own flip
    v = (ys - sw[:, 0:1]) / (sw[:, 1:2] - sw[:, 0:1])
    u = (xs - sw[:, 2:3]) / (sw[:, 3:4] - sw[:, 2:3])
    u = torch.where(src_flip[:, None], 1.0 - u, u)
    grid = torch.stack([(2 * u - 1)[:, None, :].expand(n, size[0], size[1]),
                        (2 * v - 1)[:, :, None].expand(n, size[0], size[1])], dim=-1)
    c = cam.double()[:, None]
    out = F.grid_sample(c, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]
    inside = ((v >= 0) & (v <= 1))[:, :, None] & ((u >= 0) & (u <= 1))[:, None, :]
    return torch.where(inside, out, c.amin(dim=(1, 2, 3))[:, None, None])


class CAMCache:
    """CAMs of up to ``size`` dataset indices, each stamped with the epoch it was computed
    in; an entry is fresh for ``refresh_every`` epochs (then the sample gets an exact pass
    again). Lives on ``device``; allocated on the first store (the map size is the
    model's)."""

    def __init__(self, *, size: int, refresh_every: int = 5, project_scale: int = 4,
                 device: torch.device | str = "cpu") -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int (the dataset length), got {size!r}")
        if not isinstance(refresh_every, int) or refresh_every < 1:
            raise ValueError(f"refresh_every must be an int >= 1 (epochs), got {refresh_every!r}")
        if not isinstance(project_scale, int) or project_scale < 1:
            raise ValueError(f"project_scale must be an int >= 1, got {project_scale!r}")
        self.size, self.refresh_every, self.device = size, refresh_every, torch.device(device)
        self.project_scale = project_scale
        self.cam: torch.Tensor | None = None
        self.window = torch.zeros(size, 4, dtype=torch.float32, device=self.device)
        self.flip = torch.zeros(size, dtype=torch.bool, device=self.device)
        self.epoch = torch.full((size,), -1, dtype=torch.int64, device=self.device)  # -1: empty
        self.new = torch.zeros(size, dtype=torch.bool, device=self.device)  # stored since the last sync()

    @property
    def nbytes(self) -> int:
        cam = 0 if self.cam is None else self.cam.numel() * self.cam.element_size()
        return cam + sum(t.numel() * t.element_size() for t in (self.window, self.flip, self.epoch))

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.dtype != torch.int64 or indices.dim() != 1:
            raise ValueError(f"indices must be int64 of shape (N,), got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.size):
            raise ValueError(f"indices must be in [0, {self.size}), got min {int(indices.min())}, "
                             f"max {int(indices.max())}: is the cache sized for this dataset?")
        return indices.to(self.device)

    def fresh(self, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """Bool (N,): which samples have a map computed fewer than refresh_every epochs ago."""
        e = self.epoch[self._check_indices(indices)]
        return (e >= 0) & (epoch - e < self.refresh_every) & (e <= epoch)

    def store(self, indices: torch.Tensor, cam: torch.Tensor, window: torch.Tensor, flip: torch.Tensor, epoch: int) -> None:
        idx = self._check_indices(indices)
        if cam.dim() != 3 or cam.shape[0] != idx.shape[0]:
            raise ValueError(f"cam must be (N, h, w) with N={idx.shape[0]}, got {tuple(cam.shape)}")
        if not bool(torch.isfinite(cam).all()):
            raise ValueError("refusing to cache a CAM with NaN or inf values")
        if self.cam is None:
            self.cam = torch.zeros(self.size, *cam.shape[1:], dtype=torch.float32, device=self.device)
        elif cam.shape[1:] != self.cam.shape[1:]:
            raise ValueError(f"cached maps are {tuple(self.cam.shape[1:])} but this CAM is {tuple(cam.shape[1:])}: "
                             f"one cache per model and crop size")
        self.cam[idx] = cam.to(self.device, torch.float32)
        self.window[idx] = window.to(self.device, torch.float32)
        self.flip[idx] = flip.to(self.device, torch.bool)
        self.epoch[idx] = epoch
        self.new[idx] = True

    def state_dict(self) -> dict:
        """Everything the cache holds (CPU tensors), for checkpoints: a run resumed from it
        finds the same maps fresh as the run that wrote it."""
        return {"size": self.size, "refresh_every": self.refresh_every, "project_scale": self.project_scale,
                **{k: None if getattr(self, k) is None else getattr(self, k).cpu().clone()
                   for k in ("cam", "window", "flip", "epoch", "new")}}

    def load_state_dict(self, state: dict) -> None:
        for k in ("size", "refresh_every", "project_scale"):
            if state.get(k) != getattr(self, k):
                raise ValueError(f"the saved cache has {k}={state.get(k)!r} but this one {getattr(self, k)!r}")
        self.cam = None if state["cam"] is None else state["cam"].to(self.device, torch.float32)
        for k in ("window", "flip", "epoch", "new"):
            setattr(self, k, state[k].to(self.device, getattr(self, k).dtype))

    def sync(self) -> int:
        """Collective under torch.distributed (every process must call it): each process
        gets the entries all others stored since the last call. Where two processes
        stored the same index, the newer map wins, then the higher rank's, so all
        processes end with equal caches. Without a process group it only resets the
        record of new entries. Returns how many entries it took from other processes."""
        import torch.distributed as dist

        new, self.new = self.new.nonzero()[:, 0], torch.zeros_like(self.new)
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return 0
        world, rank = dist.get_world_size(), dist.get_rank()
        hw = tuple(self.cam.shape[1:]) if self.cam is not None else (0, 0)
        head = torch.tensor([len(new), *hw], dtype=torch.int64, device=self.device)
        heads = [torch.empty_like(head) for _ in range(world)]
        dist.all_gather(heads, head)
        heads = torch.stack(heads).cpu()
        m = int(heads[:, 0].max())
        if m == 0:
            return 0
        shapes = {tuple(h[1:].tolist()) for h in heads if h[0] > 0}
        if len(shapes) != 1:
            raise ValueError(f"processes cached maps of different sizes {sorted(shapes)}: one model and crop size per run")
        h, w = shapes.pop()
        # one float64 row per entry (exact for the float32 maps and windows, int epochs,
        # indices < 2**53): index (-1 pads), window, flip, epoch, map
        rows = torch.zeros(m, 7 + h * w, dtype=torch.float64, device=self.device)
        rows[:, 0] = -1
        if len(new):
            rows[:len(new), 0] = new.double()
            rows[:len(new), 1:5] = self.window[new].double()
            rows[:len(new), 5] = self.flip[new].double()
            rows[:len(new), 6] = self.epoch[new].double()
            rows[:len(new), 7:] = self.cam[new].flatten(1).double()
        got = [torch.empty_like(rows) for _ in range(world)]
        dist.all_gather(got, rows)
        if self.cam is None:
            self.cam = torch.zeros(self.size, h, w, dtype=torch.float32, device=self.device)
        received = 0
        for r, g in enumerate(got):  # in rank order, own rows included, so ties resolve alike everywhere
            g = g[g[:, 0] >= 0]
            idx, ep = g[:, 0].long(), g[:, 6].long()
            take = ep >= self.epoch[idx]
            idx, g = idx[take], g[take]
            self.cam[idx] = g[:, 7:].view(-1, h, w).float()
            self.window[idx] = g[:, 1:5].float()
            self.flip[idx] = g[:, 5] > 0.5
            self.epoch[idx] = g[:, 6].long()
            received += len(idx) if r != rank else 0
        return received

    def project(self, indices: torch.Tensor, window: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """The cached maps of ``indices`` re-projected onto their current crops:
        (N, h * project_scale, w * project_scale) float64."""
        if self.cam is None:
            raise ValueError("the cache is empty: store maps before projecting them")
        idx = self._check_indices(indices)
        return reproject(self.cam[idx], self.window[idx], self.flip[idx], window.to(self.device), flip.to(self.device),
                         size=(self.cam.shape[1] * self.project_scale, self.cam.shape[2] * self.project_scale))
