"""The one DALI graph, built for the GPU or the CPU.

Imported lazily by the loader, so ``import dali_snapmix`` works without DALI's GPU
parts being usable. The only difference between the two builds is where the decoder
runs (``"mixed"``: nvJPEG, output on the GPU) and where the integer tensors end up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from .fused_resize import fused_resize_normalize
from .spec import TransformSpec

__all__ = ["build_pipeline"]


def image_graph(
    feed: Callable,
    *,
    spec: TransformSpec,
    device: Literal["gpu", "cpu"],
    antialias: bool,
    cpu_resize: Literal["fused", "dali"],
):
    """Define the graph inside a pipeline. ``feed`` is the batch callback of the loader.

    After the decode, the GPU graph runs DALI's ``resize`` + ``crop_mirror_normalize``.
    On the CPU the same two steps run as one Numba pass (``cpu_resize="fused"``, see
    :mod:`.fused_resize`), or as DALI's ops (``"dali"``: the GPU graph's ops, on the CPU)."""
    enc, labels, indices, anchor, shape, roi_start, roi_end, flip, window = fn.external_source(
        source=feed, num_outputs=9, batch=True, batch_info=True
    )
    # Decode only the pixels that cover the crop window (anchor/shape in (y, x)), then
    # resize its exact sub-pixel ROI to the crop size: the same geometry as
    # "resize the whole image, then crop", without paying for the discarded part.
    images = fn.decoders.image_slice(
        enc,
        anchor,
        shape,
        axis_names="HW",
        device="mixed" if device == "gpu" else "cpu",
        output_type=types.RGB,  # grayscale and CMYK come out as 3 channels
        adjust_orientation=False,  # the planner used the stored size: keep EXIF out of it
    )
    if device == "cpu" and cpu_resize == "fused":
        images = fused_resize_normalize(images, roi_start, roi_end, flip, crop=spec.crop, mean=spec.mean, std=spec.std)
        if spec.dtype == "float16":
            images = fn.cast(images, dtype=types.FLOAT16)
    else:
        images = fn.resize(
            images,
            roi_start=roi_start,
            roi_end=roi_end,
            size=[spec.crop, spec.crop],
            interp_type=types.INTERP_LINEAR,
            # Antialiasing only acts when downscaling; off, DALI's CPU resize is ~15 % faster
            # and (checked) bit-identical for upscaling, so the loader enables it only when
            # some image of the source is downscaled.
            antialias=antialias,
        )
        images = fn.crop_mirror_normalize(
            images,
            mirror=flip,
            mean=[m * 255.0 for m in spec.mean],
            std=[s * 255.0 for s in spec.std],
            output_layout="CHW",
            dtype=types.FLOAT16 if spec.dtype == "float16" else types.FLOAT,
        )
    if device == "gpu":
        return images, labels.gpu(), indices.gpu(), window.gpu(), flip.gpu()
    return images, labels, indices, window, flip


def build_pipeline(
    feed: Callable,
    *,
    spec: TransformSpec,
    device: Literal["gpu", "cpu"],
    batch_size: int,
    num_threads: int,
    prefetch: int,
    seed: int,
    antialias: bool = True,
    cpu_resize: Literal["fused", "dali"] = "fused",
):
    import torch

    device_id = torch.cuda.current_device() if device == "gpu" else None

    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        prefetch_queue_depth=prefetch,
        seed=seed,
        exec_dynamic=True,
    )
    def pipe():
        return image_graph(feed, spec=spec, device=device, antialias=antialias, cpu_resize=cpu_resize)

    p = pipe()
    p.build()
    return p
