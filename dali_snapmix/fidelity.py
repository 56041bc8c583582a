"""Label fidelity: how far a mixing method's label weights lie from what the mixed
image really shows, measured on the embedded set, whose generator knows where every
class-deciding part is (``data/synthetic.py``'s part masks).

For sample i mixed with partner j = perm[i] (``src_box[i]`` of j resized into
``dst_box[i]`` of i), with P_i the coverage of i's parts on i's crop:

    t_a = P_i outside dst_box[i] / P_i          (i's evidence the paste leaves visible)
    t_b = P_j inside src_box[i] / P_j           (j's evidence the paste carries over)

A resize keeps shares, so the symmetric and asymmetric pastes use the same formula.
A mask or a blend (FMix, SmoothMix, SamplePairing) weighs each pixel: i's parts count
with i's weight there, j's with the partner's (``part_truth``).
Every label is scored on what the loss applies (``mixed_cross_entropy``: w_a to y_a,
w_b to y_b). For a pair of different labels that is w_a against t_a and w_b against
t_b, and every rule's weights mean the same thing there: the headline. A same-label
pair (self-pairs too) shows t_a + t_b of its one class, and the loss applies w_a + w_b
to it; SnapMix's released rule gives both weights rho_a + rho_b, so it applies twice
what the rule claims (the authors up-weight same-class mixes on purpose), and the
claim (w_a) is kept beside it. Samples whose crop holds less than ``min_share`` of
their parts (or whose partner's does) have no truth to compare with and are left out
and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.spec import map_to_crop
from .data.synthetic import load_part_mask, part_mask_path
from .mix.base import MixedBatch
from .mix.comixup import CoMixMaskParams
from .mix.params import BlendParams, BoxParams, MaskParams, pixel_weights
from .models import snapshot
from .seeding import generator

__all__ = ["LIE", "PartMasks", "PartTruth", "group_label_errors", "label_errors", "left_out", "measure", "paired",
           "part_truth", "snapshot", "summarise"]

LIE = 0.3  # a weight further than this from the truth is counted as a lie


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
    hold their parts; ``share``: the smaller of the two crops' shares of their parts."""

    t_a: torch.Tensor
    t_b: torch.Tensor
    same: torch.Tensor
    mixed: torch.Tensor
    keep: torch.Tensor
    share: torch.Tensor


def _inside(cov: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Sum of each (crop, crop) map inside its half-open box (y0, y1, x0, x1)."""
    out = torch.empty(len(cov), dtype=torch.float64)
    for k, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        out[k] = cov[k, y0:y1, x0:x1].sum()
    return out


def part_truth(cov: torch.Tensor, held: torch.Tensor, labels: torch.Tensor, params: BoxParams | MaskParams | BlendParams,
               *, min_share: float = 0.25) -> PartTruth:
    """The truth of one batch mixed with ``params`` (see the module docstring); ``cov``
    and ``held`` from :meth:`PartMasks.in_crops` of the clean batch. A mask or a blend
    shows each pixel with its weight m (the own image) and 1 - m (the partner, in place, or
    where PuzzleMix's transport moved the block: ``params.move``):
    t_a = sum(P_i m) / sum(P_i), t_b = sum(P_j (1 - m)) / sum(P_j), the box formula's
    generalisation (a box's m is 0 inside, 1 outside)."""
    if not isinstance(params, (BoxParams, MaskParams, BlendParams)):
        raise ValueError(f"part truth is defined for box, mask and blend params, got {type(params).__name__}")
    perm = params.perm.cpu()
    total = cov.sum(dim=(1, 2))
    if isinstance(params, BoxParams):
        t_a = 1.0 - _inside(cov, params.dst_box.cpu()) / total.clamp_min(1e-12)
        t_b = _inside(cov[perm], params.src_box.cpu()) / total[perm].clamp_min(1e-12)
        live = params.live.cpu() & bool(params.mix)
    else:
        m = pixel_weights(params, height=cov.shape[1], width=cov.shape[2])
        cov_a, cov_b = params.move(cov, "a"), params.move(cov[perm], "b")
        t_a = (cov_a * m).sum(dim=(1, 2)) / total.clamp_min(1e-12)
        t_b = (cov_b * (1.0 - m)).sum(dim=(1, 2)) / total[perm].clamp_min(1e-12)
        live = torch.full((len(perm),), bool(params.mix))  # a self-pair, as with boxes: a same-label pair, truth 1
    share = torch.minimum(held, held[perm])
    y = labels.cpu()
    return PartTruth(t_a=t_a, t_b=t_b, same=y == y[perm], mixed=live, keep=live & (share >= min_share), share=share)


def group_label_errors(out: MixedBatch, cov: torch.Tensor, held: torch.Tensor, params: CoMixMaskParams,
                       *, min_share: float = 0.25) -> tuple[dict[str, np.ndarray], int, np.ndarray]:
    """Co-Mixup's labels against their truths (the pair formula's generalisation to an
    output of several inputs): input k of output i's group shows its parts with weight
    m_ik at each pixel, so t_ik = sum(P_k m_ik) / sum(P_k). Scored: every output that uses
    two inputs or more (one used input is an unmixed copy), each input it uses (weight > 0)
    whose crop holds ``min_share`` of its parts, in rows as :func:`label_errors` returns
    them, of kind "k" (the output's only input of that class: a different-label weight)
    or "same" (the class of several used inputs: their weights summed against their truths
    summed, share the least of theirs). Returns (rows, mixed outputs, each mixed output's
    least share of its used inputs' parts, for :func:`left_out`)."""
    N, h, w = cov.shape
    src = params.sources()
    # the weight map of each input of the group in each output, and each input's parts
    wts = params.weights.double().cpu()
    n = wts.shape[1]
    m = wts.permute(0, 3, 1, 2).repeat_interleave(h // n, 2).repeat_interleave(w // n, 3)  # (N, P, H, W)
    parts = cov[src]  # (N, P, H, W)
    t = (parts * m).sum((2, 3)) / parts.sum((2, 3)).clamp_min(1e-12)
    weight = out.weights.detach().double().cpu()
    used = weight > 0
    y, share = out.labels.cpu(), held[src]
    rows = {k: [] for k in ("weight", "claim", "truth", "kind", "sample", "share")}
    mixed_shares = []
    for i in range(N):
        if int(used[i].sum()) < 2:
            continue
        mixed_shares.append(float(share[i][used[i]].min()))
        for c in torch.unique(y[i][used[i]]).tolist():
            sel = used[i] & (y[i] == c)
            if float(share[i][sel].min()) < min_share:
                continue
            wc, tc = float(weight[i][sel].sum()), float(t[i][sel].sum())
            for key, v in (("weight", wc), ("claim", wc), ("truth", tc), ("kind", "k" if int(sel.sum()) == 1 else "same"),
                           ("sample", i), ("share", float(share[i][sel].min()))):
                rows[key].append(v)
    return ({k: np.array(v, dtype=_COLUMNS[k]) for k, v in rows.items()}, len(mixed_shares),
            np.array(mixed_shares, dtype=np.float64))


def label_errors(out: MixedBatch, truth: PartTruth, *, merges_same_label: bool) -> dict[str, np.ndarray]:
    """Weights next to their truths for the kept samples, float64 unless said: ``weight``
    (what the loss applies: w_a, w_b of a pair of different classes, w_a + w_b for the
    one class of a same-label pair), ``claim`` (what the rule says: the same, except a
    same-label class weight is w_a where ``merges_same_label``, SnapMix's rule giving
    both weights rho_a + rho_b), ``truth``, ``kind`` ("a", "b", "same"), ``sample``
    (int64, the sample's index in the batch) and ``share`` (:class:`PartTruth`'s)."""
    k, same = truth.keep, truth.same
    w_a, w_b = out.w_a.detach().double().cpu(), out.w_b.detach().double().cpu()
    diff, sm = k & ~same, k & same
    idx = torch.arange(len(k))
    applied = w_a + w_b
    claim = w_a if merges_same_label else applied
    sample = torch.cat([idx[diff], idx[diff], idx[sm]])
    kind = ["a"] * int(diff.sum()) + ["b"] * int(diff.sum()) + ["same"] * int(sm.sum())
    return {"weight": torch.cat([w_a[diff], w_b[diff], applied[sm]]).numpy(),
            "claim": torch.cat([w_a[diff], w_b[diff], claim[sm]]).numpy(),
            "truth": torch.cat([truth.t_a[diff], truth.t_b[diff], (truth.t_a + truth.t_b)[sm]]).numpy(),
            "kind": np.array(kind, dtype="<U4"), "sample": sample.numpy(), "share": truth.share[sample].numpy()}


_COLUMNS = {"weight": np.float64, "claim": np.float64, "truth": np.float64, "kind": "<U4", "sample": np.int64,
            "share": np.float64}


def _joined(rows: list[dict[str, np.ndarray]], min_share: float | None) -> dict[str, np.ndarray]:
    """The batches' :func:`label_errors` end to end, only weights whose pair's crops hold
    at least ``min_share`` of their parts (all, for None)."""
    cols = {k: np.concatenate([r[k] for r in rows]) if rows else np.zeros(0, dtype=t) for k, t in _COLUMNS.items()}
    # a sample id unique across batches (``sample`` restarts in each): batch index in the high bits
    cols["id"] = np.concatenate([r["sample"] + (b << 32) for b, r in enumerate(rows)]) if rows else np.zeros(0, np.int64)
    if min_share is not None:
        keep = cols["share"] >= min_share
        cols = {k: v[keep] for k, v in cols.items()}
    return cols


def summarise(rows: list[dict[str, np.ndarray]], *, min_share: float | None = None) -> dict[str, float]:
    """Mean absolute errors over batches' :func:`label_errors` (optionally only where
    both crops hold ``min_share`` of their parts): ``mae_diff`` (the headline: both
    weights of the different-label pairs), ``mae_a``, ``mae_b``, ``mae_same`` (a
    same-label class weight as the loss applies it), ``mae_same_claim`` (as the rule
    states it), ``mae`` (every weight, as applied); ``lies`` and ``lies_diff``: shares
    of weights off by more than LIE; ``useless_diff``: the different-label error of the
    same weights scored against the truth of a random other weight of the row (averaged
    over every permutation, exactly: the mean of |w_i - t_j| over all i, j), what a label
    that knows nothing of the image scores on this row's weights and truths, and
    ``skill_diff`` = mae_diff / useless_diff (1: no better than that; rows whose truths
    spread less have smaller errors for that reason alone)."""
    c = _joined(rows, min_share)
    err, kind = np.abs(c["weight"] - c["truth"]), c["kind"]
    claim_err = np.abs(c["claim"] - c["truth"])
    diff = kind != "same"
    useless = float(np.abs(c["weight"][diff][:, None] - c["truth"][diff][None, :]).mean()) if diff.any() else float("nan")

    def mean(e, sel) -> float:
        return float(e[sel].mean()) if sel.any() else float("nan")

    return {"mae_diff": mean(err, diff), "mae_a": mean(err, kind == "a"), "mae_b": mean(err, kind == "b"),
            "mae_same": mean(err, kind == "same"), "mae_same_claim": mean(claim_err, kind == "same"),
            "mae": mean(err, np.ones_like(diff)), "lies": mean(err > LIE, np.ones_like(diff)),
            "lies_diff": mean(err > LIE, diff), "weights": int(err.size), "pairs_diff": int((kind == "a").sum()),
            "pairs_same": int((kind == "same").sum()), "useless_diff": useless,
            "skill_diff": mean(err, diff) / useless if useless > 0 else float("nan")}


def left_out(result: dict, min_share: float) -> int:
    """Mixed samples of a :func:`measure` result without truth at ``min_share``."""
    return int((np.asarray(result["mixed_share"]) < min_share).sum())


def paired(x_rows: list[dict[str, np.ndarray]], y_rows: list[dict[str, np.ndarray]], *,
           min_share: float | None = None, kinds: tuple[str, ...] = ("a", "b"), boot: int = 2000,
           seed: int = 0) -> dict[str, float]:
    """Two labellings of the same mixed samples (the same crops, partners and boxes),
    compared weight by weight: the mean of |error of x| - |error of y| over the weights
    of ``kinds`` (default: the different-label pairs), with a 95 % percentile bootstrap
    interval that resamples samples (a pair's two weights together), and the ratio of
    the two mean errors. Raises if the rows did not score the same samples."""
    x, y = _joined(x_rows, min_share), _joined(y_rows, min_share)
    same = all(np.array_equal(x[k], y[k]) for k in ("id", "kind", "truth"))
    if not same:
        raise ValueError("paired(): the two rows did not score the same samples with the same boxes "
                         f"({len(x['truth'])} and {len(y['truth'])} weights, or other truths); draw both with the same "
                         "params (the same seed, epochs and sampling)")
    sel = np.isin(x["kind"], kinds)
    ex, ey = np.abs(x["weight"] - x["truth"])[sel], np.abs(y["weight"] - y["truth"])[sel]
    if not sel.any():
        nan = float("nan")
        return {"diff": nan, "lo": nan, "hi": nan, "mae_x": nan, "mae_y": nan, "ratio": nan, "samples": 0, "weights": 0}
    _, inv = np.unique(x["id"][sel], return_inverse=True)
    d_sum, n = np.bincount(inv, weights=ex - ey), np.bincount(inv)
    draw = np.random.default_rng(seed).integers(0, len(n), (boot, len(n)))
    boots = d_sum[draw].sum(1) / n[draw].sum(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"diff": float((ex - ey).mean()), "lo": float(lo), "hi": float(hi), "mae_x": float(ex.mean()),
            "mae_y": float(ey.mean()), "ratio": float(ex.mean() / ey.mean()), "samples": int(len(n)),
            "weights": int(sel.sum())}


def measure(mix, *, model: torch.nn.Module, loader, masks: PartMasks, epochs=(0,), seed: int = 0,
            min_share: float = 0.25) -> dict:
    """Mix ``epochs`` epochs of ``loader``'s batches (a training-mode loader: random crops
    and flips) with ``mix`` and the CAMs of ``model`` (in train mode, as in training), and
    compare each kept weight with its truth. The model's weights and BatchNorm statistics
    are restored after every batch (the released SnapMix CAM pass updates the statistics).
    Returns :func:`summarise`'s figures, ``excluded`` (mixed samples without truth),
    ``mixed``, ``mixed_share`` (each mixed sample's :class:`PartTruth` share, for
    :func:`left_out` at other thresholds) and the raw ``rows``."""
    restore = snapshot(model)
    was_training = model.training
    model.train()
    rows, mixed, excluded, shares = [], 0, 0, []
    try:
        for e in epochs:
            loader.set_epoch(e)
            mix.set_epoch(e)
            rng = generator(seed, "fidelity", epoch=e)
            for b in loader:
                cov, held = masks.in_crops(b, loader.spec.crop)
                params = mix.resolve(b.images, b.labels, mix.sample(b.images, b.labels, rng=rng), model=model)
                out = mix.apply(b.images.clone(), b.labels, params, model=model, geometry=b.geometry)
                restore()
                if isinstance(params, CoMixMaskParams):  # several inputs per output
                    row, n_mixed, least = group_label_errors(out, cov, held, params, min_share=min_share)
                    mixed += n_mixed
                    excluded += int((least < min_share).sum())
                    shares.append(least)
                    rows.append(row)
                    continue
                truth = part_truth(cov, held, b.labels, params, min_share=min_share)
                mixed += int(truth.mixed.sum())
                excluded += int(truth.mixed.sum() - truth.keep.sum())
                shares.append(truth.share[truth.mixed].numpy())
                rows.append(label_errors(out, truth, merges_same_label=mix.merges_same_label))
    finally:
        model.train(was_training)
    return {**summarise(rows), "mixed": mixed, "excluded": excluded, "rows": rows,
            "mixed_share": np.concatenate(shares) if shares else np.zeros(0)}
