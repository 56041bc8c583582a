"""Baseline: no mixing. Labels (y, y, 1, 0), so the same loss and trainer serve every method."""

from __future__ import annotations

import numpy as np
import torch

from .base import MixedBatch, MixMethod

__all__ = ["Baseline"]


class Baseline(MixMethod):
    name = "baseline"
    params_type = type(None)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> None:
        return None

    def _apply(self, images, labels, params=None, *, model=None, backend: str = "auto",
              geometry=None) -> MixedBatch:
        return self.unmixed(images, labels)
