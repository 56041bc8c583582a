"""Label fidelity: how far a box-mixing method's label weights lie from what the mixed
image really shows, measured on the embedded set, whose generator knows where every
class-deciding part is (``data/synthetic.py``'s part masks).

For sample i mixed with partner j = perm[i] (``src_box[i]`` of j resized into
``dst_box[i]`` of i), with P_i the coverage of i's parts on i's crop:

    t_a = P_i outside dst_box[i] / P_i          (i's evidence the paste leaves visible)
    t_b = P_j inside src_box[i] / P_j           (j's evidence the paste carries over)

A resize keeps shares, so the symmetric and asymmetric pastes use the same formula.
Same-label pairs (self-pairs too) show t_a + t_b of their one class, the quantity
SnapMix's rule gives both weights; an area rule gives that class w_a + w_b. Samples
whose crop holds less than ``min_share`` of their parts (or whose partner's does) have
no truth to compare with and are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.spec import map_to_crop
from .data.synthetic import load_part_mask, part_mask_path
from .mix.base import MixedBatch
from .mix.params import BoxParams
from .seeding import generator

__all__ = ["LIE", "PartMasks", "PartTruth", "label_errors", "measure", "part_truth", "snapshot", "summarise"]

LIE = 0.3  # a weight further than this from the truth is counted as a lie


def snapshot(model: torch.nn.Module):
    """A function that puts ``model``'s weights and buffers back as they are now: the
    released SnapMix CAM pass runs in train mode and moves BatchNorm statistics, which a
    measurement must not do."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return lambda: model.load_state_dict(state)


class PartMasks:
    """The part masks of a source's images (``paths`` in dataset-index order, under the
    set's ``root``), each loaded on first use, mapped into crops."""

    def __init__(self, paths, *, root: str | Path) -> None:
        self.paths, self.root = list(paths), Path(root)
        self._masks: dict[int, np.ndarray] = {}

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._masks:
            self._masks[index] = load_part_mask(part_mask_path(self.paths[index], root=self.root))
        return self._masks[index]

    def in_crops(self, batch, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(coverage float64 (N, crop, crop), held float64 (N,)): each sample's parts on
        its crop, and the share of its parts' source pixels that the crop window holds."""
        cov, held = [], []
        for k, i in enumerate(batch.indices.tolist()):
            win = batch.window[k].double()
            m = self[i]
            c = map_to_crop(m, window=win.numpy(), flip=bool(batch.flip[k]), crop=crop)
            # crop pixels -> source pixels: each crop pixel stands for the window's area / crop^2
            area = float((win[1] - win[0]) * (win[3] - win[2])) / crop**2
            cov.append(c)
            held.append(float(c.sum()) * area / max(float(m.sum()), 1.0))
        return torch.stack(cov), torch.tensor(held, dtype=torch.float64)


@dataclass(frozen=True)
class PartTruth:
    """Per sample, float64 (N,) / bool (N,): the truth ``t_a``, ``t_b``; ``same``: the
    pair shares its label; ``mixed``: a paste happened; ``keep``: mixed, and both crops
    hold their parts."""

    t_a: torch.Tensor
    t_b: torch.Tensor
    same: torch.Tensor
    mixed: torch.Tensor
    keep: torch.Tensor


def _inside(cov: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Sum of each (crop, crop) map inside its half-open box (y0, y1, x0, x1)."""
    out = torch.empty(len(cov), dtype=torch.float64)
    for k, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        out[k] = cov[k, y0:y1, x0:x1].sum()
    return out


def part_truth(cov: torch.Tensor, held: torch.Tensor, labels: torch.Tensor, params: BoxParams, *,
               min_share: float = 0.25) -> PartTruth:
    """The truth of one batch mixed with ``params`` (see the module docstring); ``cov``
    and ``held`` from :meth:`PartMasks.in_crops` of the clean batch."""
    if not isinstance(params, BoxParams):
        raise ValueError(f"part truth is defined for box-mixing params (BoxParams), got {type(params).__name__}")
    perm = params.perm.cpu()
    total = cov.sum(dim=(1, 2))
    t_a = 1.0 - _inside(cov, params.dst_box.cpu()) / total.clamp_min(1e-12)
    t_b = _inside(cov[perm], params.src_box.cpu()) / total[perm].clamp_min(1e-12)
    live = params.live.cpu() & bool(params.mix)
    keep = live & (held >= min_share) & (held[perm] >= min_share)
    y = labels.cpu()
    return PartTruth(t_a=t_a, t_b=t_b, same=y == y[perm], mixed=live, keep=keep)


def label_errors(out: MixedBatch, truth: PartTruth, *, merges_same_label: bool) -> dict[str, np.ndarray]:
    """Weights next to their truths for the kept samples: ``weight``, ``truth`` (float64)
    and ``kind`` ("a", "b" for the two labels of a pair of different classes, "same" for
    the one class of a same-label pair). ``merges_same_label``: the method's rule already
    gives a same-label pair's class weight as w_a (SnapMix: both weights = rho_a + rho_b);
    otherwise the class weight is w_a + w_b."""
    k, same = truth.keep, truth.same
    w_a, w_b = out.w_a.detach().double().cpu(), out.w_b.detach().double().cpu()
    diff, sm = k & ~same, k & same
    cls = w_a if merges_same_label else w_a + w_b
    weight = torch.cat([w_a[diff], w_b[diff], cls[sm]])
    target = torch.cat([truth.t_a[diff], truth.t_b[diff], (truth.t_a + truth.t_b)[sm]])
    kind = ["a"] * int(diff.sum()) + ["b"] * int(diff.sum()) + ["same"] * int(sm.sum())
    return {"weight": weight.numpy(), "truth": target.numpy(), "kind": np.array(kind)}


def summarise(rows: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Mean absolute errors (of w_a, of w_b, of same-label class weights, over all) and
    the share of weights off by more than LIE, over batches' :func:`label_errors`."""
    w = np.concatenate([r["weight"] for r in rows]) if rows else np.zeros(0)
    t = np.concatenate([r["truth"] for r in rows]) if rows else np.zeros(0)
    kind = np.concatenate([r["kind"] for r in rows]) if rows else np.zeros(0, dtype=str)
    err = np.abs(w - t)

    def mean(sel) -> float:
        return float(err[sel].mean()) if sel.any() else float("nan")

    return {"mae_a": mean(kind == "a"), "mae_b": mean(kind == "b"), "mae_same": mean(kind == "same"),
            "mae": mean(np.ones_like(err, dtype=bool)), "lies": float((err > LIE).mean()) if err.size else float("nan"),
            "weights": int(err.size), "pairs_diff": int((kind == "a").sum()), "pairs_same": int((kind == "same").sum())}


def measure(mix, *, model: torch.nn.Module, loader, masks: PartMasks, epochs=(0,), seed: int = 0,
            min_share: float = 0.25) -> dict:
    """Mix ``epochs`` epochs of ``loader``'s batches (a training-mode loader: random crops
    and flips) with ``mix`` and the CAMs of ``model`` (in train mode, as in training), and
    compare each kept weight with its truth. The model's weights and BatchNorm statistics
    are restored after every batch (the released SnapMix CAM pass updates the statistics).
    Returns :func:`summarise`'s figures, ``excluded`` (mixed samples without truth),
    ``mixed`` and the raw ``rows``."""
    restore = snapshot(model)
    was_training = model.training
    model.train()
    rows, mixed, excluded = [], 0, 0
    try:
        for e in epochs:
            loader.set_epoch(e)
            mix.set_epoch(e)
            rng = generator(seed, "fidelity", epoch=e)
            for b in loader:
                cov, held = masks.in_crops(b, loader.spec.crop)
                params = mix.sample(b.images, b.labels, rng=rng)
                out = mix.apply(b.images.clone(), b.labels, params, model=model, geometry=b.geometry)
                restore()
                truth = part_truth(cov, held, b.labels, params, min_share=min_share)
                mixed += int(truth.mixed.sum())
                excluded += int(truth.mixed.sum() - truth.keep.sum())
                rows.append(label_errors(out, truth, merges_same_label=mix.merges_same_label))
    finally:
        model.train(was_training)
    return {**summarise(rows), "mixed": mixed, "excluded": excluded, "rows": rows}
