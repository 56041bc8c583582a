"""The DALI GPU graph (nvJPEG decode, GPU resize) against the CPU graph on the same plan,
and its DLPack hand-off: CUDA tensors on the loader's device, no copy.

Skipped without CUDA or without DALI (the GPU check machine has no DALI)."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: tests/gpu/ runs on a GPU "
                                "machine (make gpu-check)")


def test_dali_gpu_loader_matches_the_cpu_loader(birds):
    pytest.importorskip("nvidia.dali", reason="DALI is not installed here")
    from dali_snapmix.data import DALILoader, ImageSource, TransformSpec

    src = ImageSource.from_folder(birds.train_dir)
    spec = TransformSpec(resize=72, crop=64)
    gpu = DALILoader(src, batch_size=8, train=True, spec=spec, device="gpu", seed=3)
    cpu = DALILoader(src, batch_size=8, train=True, spec=spec, device="cpu", seed=3, cpu_resize="dali")
    for bg, bc in zip(gpu, cpu):
        assert bg.images.is_cuda and bg.images.device.index == torch.cuda.current_device()
        assert torch.equal(bg.indices.cpu(), bc.indices) and torch.equal(bg.labels.cpu(), bc.labels)
        assert torch.equal(bg.flip.cpu(), bc.flip) and torch.allclose(bg.window.cpu(), bc.window)
        # nvJPEG and libjpeg-turbo decode to within a grey level or two; the resize is the same op
        d = (bg.images.float().cpu() - bc.images.float()).abs()
        assert d.mean() < 0.01 and d.max() < 0.5, (d.mean(), d.max())
