"""In-place mixing kernels, one source for CUDA and CPU (installed as ``dali_snapmix.kernels``).

Each kernel dispatches by the tensors' device: CUDA tensors go to Numba CUDA kernels
(zero-copy through ``__cuda_array_interface__``), CPU tensors to Numba CPU kernels;
``backend="reference"`` forces the pure-torch reference that sits beside each kernel.
Numba and its CUDA target are imported only when a kernel first runs.
"""

from ._target import nvtx_range
from .blend import blend, mask_blend
from .centre_surround import centre_surround
from .fill_box import fill_box
from .grid_mrf import grid_mrf_sweeps
from .paste_resized import paste_resized
from .spm_box_mass import spm_box_mass

__all__ = ["blend", "centre_surround", "fill_box", "grid_mrf_sweeps", "mask_blend", "nvtx_range", "paste_resized", "spm_box_mass"]
