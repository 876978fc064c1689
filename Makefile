# The two commands of the README: `make run` and `make test` (each installs first when needed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# Where torch comes from first: PyTorch's CPU wheel index (~200 MB). Unreachable (or empty: TORCH_INDEX=), torch is
# installed from pip's default index instead; on Linux that is PyPI's CUDA build (several GB of nvidia-* wheels).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP  := $(VENV)/.installed
BENCH_VENV  ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

SWEEPS := curriculum temperature iterations gap_loss baselines

# $(call install_torch,<python>): $(TORCH) from $(TORCH_INDEX) where it is reachable, else from the default index.
define install_torch
	@if [ -n "$(TORCH_INDEX)" ] && $(1) -m pip install --quiet --retries 1 --timeout 30 \
	    --index-url "$(TORCH_INDEX)" "$(TORCH)"; then \
	  echo "install: $(TORCH) with --index-url $(TORCH_INDEX)"; \
	else \
	  echo "install: $(TORCH) from pip's default index$(if $(TORCH_INDEX), ($(TORCH_INDEX) not reachable))"; \
	  $(1) -m pip install --quiet "$(TORCH)"; \
	fi
endef

.PHONY: install run test lint clean bench bench-gpu wheels sweeps $(addprefix sweep-,$(SWEEPS))

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(call install_torch,$(PY))
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: install
	$(PY) -m pit.run $(ARGS)

# One pytest-xdist worker per CPU (TEST_WORKERS=0: none), each pinned to its CPU by tests/conftest.py so that the
# jobs it starts take one thread: on 2 cores the suite takes about half as long.
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# `make sweep-curriculum` (or temperature, iterations, gap_loss, baselines): a Hydra multirun into
# multirun/<name>, then its comparison table and plots in multirun/<name>/compare. ARGS adds overrides,
# e.g. ARGS="+experiment=hh_rlhf hydra/launcher=joblib".
$(addprefix sweep-,$(SWEEPS)): sweep-%: install
	$(PY) -m pit.run -m +sweep=$* hydra.sweep.dir=multirun/$* $(ARGS)
	$(PY) -m pit.compare multirun/$*

sweeps: $(addprefix sweep-,$(SWEEPS))

# `make bench`: ours vs TRL 1.0 (SFT, reward model, PPO iteration, rollout sampling) and the default pipeline
# cold, in a separate environment so TRL never enters ours. BENCH_ARGS="--size gpt2 --precision bf16" on a GPU.
$(BENCH_STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(call install_torch,$(BENCH_VENV)/bin/python)
	$(BENCH_VENV)/bin/python -m pip install --quiet "trl==1.0.0" -e ".[lora]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python experiments/bench/bench.py --default-pipeline $(BENCH_ARGS)

# `make bench-gpu`: the GPU figures (experiments/bench/gpu.sh; BENCH_ARGS=--dry-run runs them small on CPU).
bench-gpu: $(BENCH_STAMP)
	PY=$(BENCH_VENV)/bin/python bash experiments/bench/gpu.sh $(BENCH_ARGS)

# `make wheels`: what a GPU image with torch/transformers/lightning/peft lacks for gpu.sh, as Python 3.12 wheels in
# .whl/ (2 MB; gpu.sh installs them). antlr4 4.9.3 (Hydra's parser) exists only as a source archive: built here.
WHEELS := trl==1.0.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hydra-core==1.3.2 omegaconf==2.3.0
wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $(WHEELS)
	$(PYTHON) -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3

lint: install
	$(VENV)/bin/ruff check pit tests experiments

clean:
	rm -rf outputs multirun .cache wandb .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
