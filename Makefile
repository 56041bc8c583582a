# The two commands the README leads with. Both create .venv on first use.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test gpu-check lint clean

$(PY):
	python3 -m venv .venv

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) train_dali.py --preset demo --compare baseline,cutmix,snapmix --save-samples --label-fidelity

test: $(STAMP)
	$(PY) -m ruff check dali_snapmix kernels benchmarks tests train_dali.py
	$(PY) -m pytest -q

# The prepared GPU check (benchmarks/gpu_check.py): the machine's own Python and packages,
# this project installed from the working tree without dependencies. Without CUDA it says so.
GPU_PY ?= $(shell test -x $(PY) && echo $(PY) || echo python3)
gpu-check:
	$(GPU_PY) benchmarks/gpu_check.py

clean:
	rm -rf .venv .pytest_cache runs
