"""DALI loader (GPU or CPU) and its plain-PyTorch twin, both driven by one EpochPlan.

Both yield :class:`Batch` objects with DataLoader semantics: ``len()`` is the number of
batches in an epoch, each ``for`` loop runs one epoch, the order is reshuffled every
epoch from ``seed``, the last partial batch is dropped in training and kept in
evaluation, and with ``torch.distributed`` initialised each rank reads its own shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .sources import BadImageError, ImageSource, full_decode_error
from .spec import CropGeometry, EpochPlan, TransformSpec, plan_epoch, resized_size

__all__ = ["Batch", "DALILoader", "TorchLoader", "make_loader", "resolve_device"]

Device = Literal["auto", "gpu", "cpu"]


@dataclass
class Batch:
    """One batch. ``images``: NCHW, normalised, float32 (or float16) on the loader's
    device; ``labels``/``indices``: int64 (N,); ``window``: float32 (N, 4), each sample's
    crop as (y0, y1, x0, x1) in source-image pixels; ``flip``: bool (N,), True where the
    crop was mirrored horizontally after cropping."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    window: torch.Tensor
    flip: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def geometry(self) -> CropGeometry:
        """Indices, crop windows and flips on the host: what the CAM cache needs."""
        return CropGeometry.of(self, n=len(self))

    def pin_memory(self, device=None) -> Batch:
        """Every tensor in page-locked memory: torch's DataLoader calls this with
        ``pin_memory=True`` (a custom batch type is otherwise passed through unpinned),
        so the copy to the GPU can be asynchronous."""
        return Batch(**{k: v.pin_memory() if device is None else v.pin_memory(device) for k, v in vars(self).items()})


def resolve_device(device: Device) -> Literal["gpu", "cpu"]:
    if device not in ("auto", "gpu", "cpu"):
        raise ValueError(f"device must be 'auto', 'gpu' or 'cpu', got {device!r}")
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device == "gpu" and not torch.cuda.is_available():
        raise ValueError("device='gpu' was asked for but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _PlannedLoader:
    """Epoch bookkeeping shared by both loaders."""

    def __init__(
        self,
        source: ImageSource,
        *,
        batch_size: int,
        train: bool,
        spec: TransformSpec,
        seed: int,
        rank: int | None,
        world_size: int | None,
    ) -> None:
        if not isinstance(source, ImageSource):
            raise ValueError(f"source must be an ImageSource, got {type(source).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        r, w = _dist_rank_world()
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size
        self.source, self.batch_size, self.train, self.spec, self.seed = source, batch_size, train, spec, seed
        self.epoch = 0
        if train and len(source) // self.world_size < batch_size:
            raise ValueError(
                f"batch_size {batch_size} is larger than this rank's {len(source) // self.world_size} "
                f"training samples: an epoch would be empty (the last partial batch is dropped)"
            )

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch the next ``for`` loop runs (like DistributedSampler.set_epoch)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def plan(self, epoch: int) -> EpochPlan:
        return plan_epoch(
            self.source.sizes,
            spec=self.spec,
            train=self.train,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
        )

    def __len__(self) -> int:
        n = len(self.source)
        if self.train:
            return (n // self.world_size) // self.batch_size
        mine = len(range(self.rank, n, self.world_size))
        return -(-mine // self.batch_size)


def require_dali() -> None:
    """DALI is a dependency, but an image may lack it (the GPU check's machine does): say
    what to install, and that the PyTorch loader works without it."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the DALI loader needs NVIDIA DALI ({e}): pip install 'nvidia-dali-cuda130>=2.4,<2.5' "
                          "(a dependency of dali-snapmix), or use the PyTorch loader: make_loader('pytorch', ...), "
                          "train_dali.py --data-loader pytorch", name="nvidia.dali") from e


class DALILoader(_PlannedLoader):
    """Decode, crop, resize, flip and normalise with an NVIDIA DALI pipeline.

    ``device="gpu"`` decodes with nvJPEG (``device="mixed"``) and runs every op on the
    GPU; ``device="cpu"`` builds the same graph with ``device_id=None``. Only the crop
    window of each image is decoded and resized (``decoders.image_slice`` + ``resize``
    with a sub-pixel ROI), which is what makes it fast on the CPU.

    On the CPU, ``cpu_resize="fused"`` (default) runs the resize, flip and normalise as
    one Numba pass (the loader runs 2.6x faster than with DALI's ops), equal to DALI's
    ops up to one 8-bit rounding level on rare ties; ``"dali"`` runs DALI's ``resize``
    + ``crop_mirror_normalize``, the ops of the GPU graph. The GPU ignores it.

    The tensors of a batch alias DALI's output buffers (zero-copy): they stay valid
    until the next batch is requested. Pass ``copy=True``, or ``.clone()`` what you
    keep, if you need them longer.
    """

    def __init__(
        self,
        source: ImageSource,
        *,
        batch_size: int,
        train: bool,
        spec: TransformSpec = TransformSpec(),
        device: Device = "auto",
        seed: int = 0,
        num_threads: int = 2,
        prefetch: int = 2,
        rank: int | None = None,
        world_size: int | None = None,
        copy: bool = False,
        cpu_resize: Literal["fused", "dali"] = "fused",
    ) -> None:
        super().__init__(source, batch_size=batch_size, train=train, spec=spec, seed=seed, rank=rank, world_size=world_size)
        require_dali()
        if cpu_resize not in ("fused", "dali"):
            raise ValueError(f"cpu_resize must be 'fused' or 'dali', got {cpu_resize!r}")
        self.cpu_resize = cpu_resize
        self.device = resolve_device(device)
        self.num_threads, self.prefetch, self.copy = num_threads, prefetch, copy
        self._pipe = None
        self._pipe_first_epoch = 0  # epoch the pipeline's epoch_idx 0 stands for
        self._pipe_next_epoch = -1  # epoch the pipeline will produce next; -1: must rebuild
        self._plans: dict[int, EpochPlan] = {}

    # The external source runs in DALI's prefetch, possibly ahead of the consumer:
    # it must find its epoch from batch_info, not from loader state.
    def _feed(self, info):
        plan = self._plan_cached(self._pipe_first_epoch + info.epoch_idx)
        if info.iteration >= len(plan):
            raise StopIteration
        sl = plan.batch(info.iteration)
        idx = plan.indices[sl]
        enc = [np.fromfile(self.source.paths[i], dtype=np.uint8) for i in idx]
        win = plan.window[sl]
        h, w = self.source.sizes[idx, 0], self.source.sizes[idx, 1]
        # Decode the integer pixel span that covers the window; resize its exact sub-pixel part.
        a = np.stack([np.floor(win[:, 0]), np.floor(win[:, 2])], axis=1)
        b = np.stack([np.minimum(np.ceil(win[:, 1]), h), np.minimum(np.ceil(win[:, 3]), w)], axis=1)
        roi_start = np.stack([win[:, 0], win[:, 2]], axis=1) - a
        roi_end = np.stack([win[:, 1], win[:, 3]], axis=1) - a
        # fixed-shape per-sample data goes in as one array per batch (cheaper to feed)
        return (
            enc,
            np.ascontiguousarray(self.source.labels[idx], dtype=np.int64),
            np.ascontiguousarray(idx, dtype=np.int64),
            a.astype(np.int32),
            (b - a).astype(np.int32),
            roi_start.astype(np.float32),
            roi_end.astype(np.float32),
            plan.flip[sl].astype(np.int32),  # DALI's mirror takes int32
            win.astype(np.float32),
        )

    def _plan_cached(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            self._plans = {e: p for e, p in self._plans.items() if e >= epoch - 1}
            self._plans[epoch] = self.plan(epoch)
        return self._plans[epoch]

    def _build(self, first_epoch: int) -> None:
        from .dali_graph import build_pipeline  # DALI is imported only when a loader is built

        self._pipe_first_epoch = first_epoch
        self._pipe = build_pipeline(
            self._feed,
            spec=self.spec,
            device=self.device,
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            prefetch=self.prefetch,
            seed=self.seed,
            antialias=self._downscales(),
            cpu_resize=self.cpu_resize,
        )
        self._pipe_next_epoch = first_epoch

    def _downscales(self) -> bool:
        """True when the spec shrinks any image of the source along either axis."""
        h, w = self.source.sizes[:, 0], self.source.sizes[:, 1]
        rh, rw = resized_size(h, w, self.spec)
        return bool(np.any(rh < h) or np.any(rw < w))

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        if self._pipe is None or self._pipe_next_epoch != epoch:
            self._build(epoch)
        self._pipe_next_epoch = -1  # if this loop is abandoned, the next one rebuilds
        self.epoch = epoch + 1
        k = 0
        while True:
            try:
                out = self._pipe.run()
            except StopIteration:
                self._pipe.reset()
                self._pipe_next_epoch = epoch + 1
                return
            except RuntimeError as e:
                self._pipe = None
                raise self._explain_failure(epoch, k, e) from e
            yield self._to_batch(out)
            k += 1

    def _to_batch(self, out) -> Batch:
        ts = [torch.from_dlpack(o.as_tensor()) for o in out]
        if self.copy:
            ts = [t.clone() for t in ts]
        images, labels, indices, window, flip = ts
        return Batch(images=images, labels=labels, indices=indices, window=window, flip=flip.bool())

    def _explain_failure(self, epoch: int, k: int, err: Exception) -> Exception:
        """DALI reports a decode failure without the file name: find the file."""
        plan = self._plan_cached(epoch)
        for b in range(k, min(len(plan), k + self.prefetch + 2)):
            for i in plan.indices[plan.batch(b)]:
                why = full_decode_error(self.source.paths[i])
                if why is not None:
                    return BadImageError(f"cannot decode image {why}")
        return err


class TorchLoader(_PlannedLoader):
    """The plain-PyTorch fallback: torchvision transforms in DataLoader workers, the
    same EpochPlan (order, crops, flips) as :class:`DALILoader`. Images are resized
    to the planned (rh, rw) with PIL's antialiased bilinear filter, then cropped."""

    def __init__(
        self,
        source: ImageSource,
        *,
        batch_size: int,
        train: bool,
        spec: TransformSpec = TransformSpec(),
        device: Device = "auto",
        seed: int = 0,
        num_workers: int = 2,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(source, batch_size=batch_size, train=train, spec=spec, seed=seed, rank=rank, world_size=world_size)
        self.device = resolve_device(device)
        self._sampler = _PlanBatchSampler(self)
        self._loader = torch.utils.data.DataLoader(
            _PlannedImages(source.paths, source.labels, spec),
            batch_sampler=self._sampler,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            # fork() after DALI (or any threaded runtime) has started threads can deadlock
            multiprocessing_context="spawn" if num_workers > 0 else None,
            pin_memory=self.device == "gpu",
            collate_fn=_collate,
        )

    def __iter__(self) -> Iterator[Batch]:
        self._sampler.epoch_plan = self.plan(self.epoch)
        self.epoch += 1
        dev = torch.device("cuda" if self.device == "gpu" else "cpu")
        for b in self._loader:
            if dev.type == "cuda":
                b = Batch(**{k: v.to(dev, non_blocking=True) for k, v in vars(b).items()})
            yield b


class _PlanBatchSampler:
    """Yields, per batch, the plan rows the workers need; lives in the main process so a
    persistent DataLoader sees each epoch's new plan."""

    def __init__(self, owner: TorchLoader) -> None:
        self.owner = owner
        self.epoch_plan: EpochPlan | None = None

    def __len__(self) -> int:
        return len(self.owner)

    def __iter__(self):
        p = self.epoch_plan
        for k in range(len(p)):
            sl = p.batch(k)
            yield [
                (int(i), int(oy), int(ox), int(rh), int(rw), bool(f), tuple(map(float, win)))
                for i, (oy, ox), (rh, rw), f, win in zip(p.indices[sl], p.offset[sl], p.rsize[sl], p.flip[sl], p.window[sl])
            ]


class _PlannedImages(torch.utils.data.Dataset):
    def __init__(self, paths: tuple[Path, ...], labels: np.ndarray, spec: TransformSpec) -> None:
        self.paths, self.labels, self.spec = paths, labels, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row):
        import torchvision.transforms.functional as TF
        from PIL import Image

        i, oy, ox, rh, rw, flip, win = row
        try:
            with Image.open(self.paths[i]) as im:
                img = im.convert("RGB")
        except Exception as e:
            raise BadImageError(f"cannot decode image {self.paths[i]}: {e}") from e
        img = TF.resize(img, [rh, rw], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        img = TF.crop(img, oy, ox, self.spec.crop, self.spec.crop)
        if flip:
            img = TF.hflip(img)
        x = TF.normalize(TF.to_tensor(img), list(self.spec.mean), list(self.spec.std))
        if self.spec.dtype == "float16":
            x = x.half()
        return x, int(self.labels[i]), i, win, flip


def _collate(items) -> Batch:
    xs, ys, idx, win, flip = zip(*items)
    return Batch(
        images=torch.stack(xs),
        labels=torch.tensor(ys, dtype=torch.int64),
        indices=torch.tensor(idx, dtype=torch.int64),
        window=torch.tensor(win, dtype=torch.float32),
        flip=torch.tensor(flip, dtype=torch.bool),
    )


def make_loader(
    kind: Literal["dali", "pytorch"], source: ImageSource, *, workers: int = 2, **kwargs
) -> DALILoader | TorchLoader:
    """One switch between the DALI loader and the PyTorch fallback (same spec, same plan)."""
    if kind == "dali":
        return DALILoader(source, num_threads=workers, **kwargs)
    if kind == "pytorch":
        return TorchLoader(source, num_workers=workers, **kwargs)
    raise ValueError(f"data loader must be 'dali' or 'pytorch', got {kind!r}")

