"""The prepared GPU check (benchmarks/gpu_check.py) on this CPU machine: the rehearsal of
every step with the GPU machine's missing modules blocked, the process-group stop, a
report that survives broken files, the budget, and memcheck's refusal rule."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_check
from benchmarks.gpu_check import PARTS, Check, run_group

ROOT = Path(__file__).resolve().parents[2]


def test_rehearsal_runs_every_step_and_reports_them(tmp_path):
    out = tmp_path / "rehearse"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--rehearse", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["rehearsal"] and r["problems"] == [] and r["not_reached"] == [] and r["not_selected"] == []
    assert [s["name"] for s in r["steps"]] == ["install", "import", *PARTS]
    assert all(s["status"] == "ok" for s in r["steps"]), r["steps"]
    assert r["install"].startswith("pip --target")  # the installed copy, not the checkout, was used
    # the blocked modules really were missing, in this process and in every step's
    for mod in gpu_check.H200_LACKS:
        assert r["machine"][mod].startswith("missing"), (mod, r["machine"][mod])
    log = (out / "log.txt").read_text()
    assert "blocked by DALI_SNAPMIX_BLOCK" not in log  # nothing tried to import them and failed
    assert r["test_counts"]["skipped"] >= 30 and r["test_counts"]["failed"] == 0  # tests/gpu collected, skipped
    assert "paste_resized" in r["kernels"]
    # the summary's rows (on the GPU, every row in every step), the first step with the grid solver's
    summary = {"baseline", "snapmix", "snapmix-lowres", "snapmix-cached", "floor"}
    first, *others = gpu_check.OVERHEAD
    assert set(r["overhead"][first]["rows"]) == summary | {"puzzlemix", "comixup", "automix"}
    assert r["overhead"][first]["rows"]["comixup"]["step_ms"] > 0
    for name in others:
        assert set(r["overhead"][name]["rows"]) == summary
    for name in gpu_check.OVERHEAD:
        assert r["overhead"][name]["figures"]["setting"]["device"] == "cpu"
        assert "exact_minus_floor_pts" in r["overhead"][name]["figures"]  # the summary lines ran
    md = (out / "report.md").read_text()
    assert "REHEARSAL" in md and "Problems: 0" in md and "| memcheck | ok |" in md
    assert sorted(os.listdir(out)) == ["junit-memcheck.xml", "junit.xml", "log.txt", "report.json", "report.md"]


def test_without_pip_the_package_is_copied_as_setuptools_lays_it_out(tmp_path):
    """The install step's fallback: the copied tree imports in a fresh interpreter that
    sees only it (-P: not the checkout), kernels included, and runs a kernel."""
    copy_package = gpu_check.copy_package

    copy_package(tmp_path)
    code = ("import dali_snapmix, dali_snapmix.trainer, torch; from dali_snapmix import kernels; "
            "x = torch.zeros(1, 1, 2, 2); kernels.fill_box(x, boxes=torch.tensor([[0, 1, 0, 2]]), value=1.0, backend='reference'); "
            "print(dali_snapmix.__file__, kernels.__file__, x.sum().item())")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    where, kernels_at, total = p.stdout.split()
    assert where.startswith(str(tmp_path)) and kernels_at == str(tmp_path / "dali_snapmix" / "kernels" / "__init__.py")
    assert float(total) == 2.0


def test_a_step_past_its_limit_gets_sigint_then_its_whole_group_is_killed(tmp_path, monkeypatch):
    """The step's own process traps SIGINT (as pytest does, to write its junit) and exits;
    a grandchild that ignores it dies with the group."""
    monkeypatch.setattr(gpu_check, "GRACE_S", 1.0)  # 5 s on the GPU machine; the same code path
    child = tmp_path / "child.pid"
    script = (f"import signal, subprocess, sys, time\n"
              f"p = subprocess.Popen(['sleep', '60'], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))\n"
              f"open({str(child)!r}, 'w').write(str(p.pid))\n"
              f"try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('got SIGINT'); sys.exit(3)\n")
    with open(tmp_path / "log.txt", "w+") as log:
        t = time.monotonic()
        rc, timed_out, secs = run_group([sys.executable, "-c", script], 1.5, env=dict(os.environ), log=log)
        log.seek(0)
        text = log.read()
    assert timed_out and rc == 3 and "got SIGINT" in text and time.monotonic() - t < 10
    pid = int(child.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]

    # one that ignores SIGINT itself: SIGKILL after the grace
    with open(tmp_path / "log2.txt", "w") as log:
        rc, timed_out, secs = run_group([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                                         "signal.SIG_IGN); time.sleep(60)"], 1.0, env=dict(os.environ), log=log)
    assert timed_out and rc == -9 and secs < 1.0 + gpu_check.GRACE_S + 3


def test_the_report_survives_broken_files_and_names_them(tmp_path):
    c = Check(tmp_path, 100.0, PARTS, rehearse=False)
    c.info = {"gpu": "test"}
    c.steps["install"] = {"name": "install", "status": "rc 1", "rc": 1, "seconds": 1.0, "output": ""}
    c.steps["import"] = {"name": "import", "status": "ok", "rc": 0, "seconds": 1.0, "output": ""}
    c.steps["tests"] = {"name": "tests", "status": "time limit", "rc": -9, "seconds": 30.0, "output": ""}
    (tmp_path / "junit.xml").write_text('<testsuites><testsuite><testcase classname="a" name="t1"')  # cut off
    c.steps["overhead-r50-off"] = {"name": "overhead-r50-off", "status": "ok", "rc": 0, "seconds": 5.0,
                                   "output": "| snapmix | 1.0 | +5.0% | +1.0% .. +9.0% | 0.1 | 0.2 | x |\n",
                                   "figures": {"overhead": {"snapmix": 0.05}}, "figures_error": None}
    c.steps["overhead-r50-bf16"] = {"name": "overhead-r50-bf16", "status": "ok", "rc": 0, "seconds": 5.0,
                                    "output": "garbage", "figures": None,
                                    "figures_error": "JSONDecodeError: Expecting value"}
    bad = c.write_report()
    r = json.loads((tmp_path / "report.json").read_text())
    problems = "\n".join(r["problems"])
    assert "junit.xml: ParseError" in problems and "step tests: time limit" in problems
    assert "overhead-r50-bf16.json: JSONDecodeError" in problems
    assert "install" not in problems  # the copied package imported: an install failure is reported, not counted
    assert bad == len(r["problems"]) == 3
    v = dict((k, (text, ok)) for k, text, ok in r["verdicts"])
    assert v["overhead-r50-off"][0].startswith("no verdict (KeyError") and not v["overhead-r50-off"][1]
    assert r["overhead"]["overhead-r50-off"]["rows"]["snapmix"]["overhead_pct"] == 5.0  # what was measured stays
    assert set(r["not_reached"]) == set(PARTS) - {"tests", "overhead-r50-off", "overhead-r50-bf16"}
    md = (tmp_path / "report.md").read_text()
    assert "Problems: 3" in md and "Not reached" in md and "| install | rc 1 |" in md

    c.steps["import"].update(rc=1, status="rc 1")  # nothing imports: now the install's failure counts
    assert c.write_report() == 5  # + step import (rc 1) + step install


def test_the_limits_add_up_to_the_budget_and_later_parts_keep_their_share(tmp_path):
    shares = dict(gpu_check.STEPS)
    assert sum(shares.values()) == pytest.approx(1.0)
    c = Check(tmp_path, 200.0, ["kernels", "memcheck"], rehearse=True)
    assert c.selected == ["install", "import", "kernels", "memcheck"]
    kept = 200.0 * (shares["import"] + shares["kernels"] + shares["memcheck"])
    assert c.limit("install") == pytest.approx(200.0 - kept, abs=0.5)
    assert c.limit("memcheck") == pytest.approx(200.0, abs=0.5)  # the last one gets all that is left
    c.write_report()
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["not_selected"] == [p for p in PARTS if p not in ("kernels", "memcheck")]
    assert r["not_reached"] == ["install", "import", "kernels", "memcheck"]
    with pytest.raises(SystemExit):
        gpu_check.main(["--parts", "kernels,overhead", "--out", str(tmp_path / "x")])


def test_memcheck_skips_with_the_sanitizers_words_when_it_refuses_the_device():
    spec = importlib.util.spec_from_file_location("memcheck_gpu", ROOT / "tests" / "gpu" / "test_memcheck_gpu.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    refused = "========= COMPUTE-SANITIZER\n========= Error: Device not supported. See the supported devices.\n"
    assert m.refusal(refused) == "Device not supported. See the supported devices."
    assert m.refusal("========= ERROR SUMMARY: 0 errors\n") is None
    assert m.refusal("========= Invalid __global__ write of size 4 bytes\n========= ERROR SUMMARY: 1 error\n") is None
