"""Data: the embedded dataset, image sources, the transform spec and the loaders."""

from .fashion_mnist import FashionMNIST, ensure_fashion_mnist
from .loader import Batch, DALILoader, TorchLoader, make_loader, resolve_device
from .sources import BadImageError, ImageSource
from .spec import CropGeometry, EpochPlan, TransformSpec, plan_epoch
from .synthetic import SyntheticBirds, ensure_synthetic_birds

__all__ = [
    "Batch",
    "BadImageError",
    "CropGeometry",
    "DALILoader",
    "EpochPlan",
    "FashionMNIST",
    "ImageSource",
    "SyntheticBirds",
    "TorchLoader",
    "TransformSpec",
    "ensure_fashion_mnist",
    "ensure_synthetic_birds",
    "make_loader",
    "plan_epoch",
    "resolve_device",
]
