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

.PHONY: install run test lint clean bench sweeps $(addprefix sweep-,$(SWEEPS))

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(call install_torch,$(PY))
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: install
	$(PY) -m pit.run $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

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
	$(BENCH_VENV)/bin/python -m pip install --quiet "trl==1.0.0" -e .
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python experiments/bench/bench.py --default-pipeline $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check pit tests experiments

clean:
	rm -rf outputs multirun .cache wandb .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
