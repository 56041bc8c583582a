"""The trainer on a GPU for a few steps: the PyTorch loader's pinned copies, --amp bf16
and fp16, --channels-last, SnapMix's CUDA CAM pass and cache, and a one-process NCCL
run under torchrun (set_device, DistributedDataParallel, all_reduce).

Skipped without CUDA (make gpu-check runs it on a GPU machine)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: tests/gpu/ runs on a GPU "
                                "machine (make gpu-check)")
ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model", "small_cnn", "--resize", "72", "--crop", "64", "--batch-size", "8", "--lr-steps", "1",
        "--epochs", "1", "--device", "gpu", "--data-loader", "pytorch", "--workers", "1"]


@pytest.mark.parametrize("extra", [["--mix", "snapmix"], ["--mix", "snapmix", "--amp", "bf16"],
                                   ["--mix", "cutmix", "--amp", "fp16"], ["--mix", "snapmix", "--channels-last"],
                                   ["--mix", "snapmix", "--cam-cache-every", "2", "--mix-prob", "0.5"]],
                         ids=["fp32", "bf16", "fp16", "channels-last", "cached"])
def test_trainer_steps_on_the_gpu(birds, tmp_path, extra):
    from dali_snapmix.trainer import main

    res = main(["--data", str(birds.root), *TINY, *extra, "--out", str(tmp_path / "run")])
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert torch.isfinite(torch.tensor(rows[-1]["loss"])) and 0.0 <= res["top1"] <= 1.0
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_one_process_nccl_under_torchrun(birds, tmp_path, free_port):
    out = tmp_path / "ddp"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(free_port),
                        str(ROOT / "train_dali.py"), "--data", str(birds.root), *TINY, "--mix", "snapmix",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "world=1" in p.stdout and "backend=nccl" in p.stdout and "RESULT" in p.stdout


def test_fp16_step_with_the_scaler_updates_what_underflows_without_it():
    """A loss whose fp16 gradients flush to zero unscaled (1e-9 x a unit-size loss): the
    trainer's step with --amp fp16's scaler still moves the weights; the same step with
    the scaler off (what fp16 training did before) leaves them where they were."""
    from dali_snapmix.trainer import backward_step

    moved = {}
    for enabled in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 8).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=1e6)
        scaler = torch.amp.GradScaler("cuda", enabled=enabled)
        before = model.weight.detach().clone()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(torch.randn(16, 64, device="cuda")).float().square().mean() * 1e-9
        backward_step(loss, opt, scaler)
        moved[enabled] = (model.weight.detach() - before).abs().max().item()
    assert moved[False] == 0.0 and moved[True] > 0.0, moved


def test_the_pytorch_loader_pins_its_batches(birds):
    """pin_memory=True reaches every tensor of a Batch: the copies to the GPU can overlap."""
    from dali_snapmix.data import ImageSource, TransformSpec, make_loader

    src = ImageSource.from_folder(birds.root / "train")
    loader = make_loader("pytorch", src, batch_size=4, train=True, spec=TransformSpec(resize=40, crop=32),
                         device="gpu", workers=1)
    loader._sampler.epoch_plan = loader.plan(0)  # what __iter__ does, then the DataLoader's own batch, pre-copy
    b = next(iter(loader._loader))
    assert all(v.is_pinned() for v in vars(b).values()), {k: v.is_pinned() for k, v in vars(b).items()}
