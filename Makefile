# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Override the torch requirement for a GPU build, e.g. `make demo TORCH=torch`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
MODEL ?= smollm2-135m-instruct
PROMPT ?= What is the capital of France?
NODES ?= 3
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.swarmlm-installed

.PHONY: demo test unit heavy install model clean-venv

install: $(STAMP)

# Reinstall only when the project's requirements change. uv installs what pip would, from the same
# registries, in about a quarter of the time (parallel unpacking, no bytecode compiled up front; pip
# took ~55 s of CI's 14 minutes). It does not read pip's configuration, so it is given pip's local
# wheel folders: `torch==2.13.0` stays this machine's CPU wheel. pip comes to 24.1 or later too:
# `swarmlm shards pull` runs `pip download --progress-bar raw`, which the venv's own pip (23.2) lacks.
FIND_LINKS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip install -q --python $(BIN)/python $(foreach d,$(FIND_LINKS),--find-links $(d)) \
	  "$(TORCH)" -e ".[test]" "pip>=24.1"
	@touch $@

# Fetch and pack the default model; skipped when the packed store already verifies.
model: install
	$(BIN)/swarmlm shards pull $(MODEL)

demo: model
	$(BIN)/swarmlm demo --model $(MODEL) --nodes $(NODES) "$(PROMPT)"

test: model tools
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

# Test processes compute on one thread each (OMP_NUM_THREADS, inherited by nodes and gateways): with
# more busy processes than cores, torch's OpenMP threads spin waiting for each other. Measured with
# two other busy processes on the two cores, a local constrained generation test took 43.8 s and 33
# CPU-s on two threads, 23.9 s and 14 CPU-s on one. Every process of a run uses the same count, so
# results computed in different processes agree to the bit. Imported modules' bytecode is cached, under
# the venv: uv installs none (pip compiled all 16k files, 54 CPU-s here), and where the environment sets
# PYTHONDONTWRITEBYTECODE every test process, gateway and node compiled each module it imported from source
# (importing the node's modules: 4.4 CPU-s, from the cache 2.2).
TEST_ENV = OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} PYTHONDONTWRITEBYTECODE= \
  PYTHONPYCACHEPREFIX=$${PYTHONPYCACHEPREFIX:-$(abspath $(VENV))/pycache}

# Tests that need neither the model nor node processes (markers set in tests/conftest.py): mostly
# single-threaded Python, so one worker per core (UNIT_WORKERS=0 runs them in this process).
UNIT_WORKERS ?= 2
unit: install
	$(TEST_ENV) $(BIN)/python -m pytest -m "not model and not swarm and not bigmodel and not long" \
	  $(if $(filter-out 0,$(UNIT_WORKERS)),-n $(UNIT_WORKERS) --dist loadgroup --no-loadscope-reorder) $(PYTEST_ARGS)

# The rest of `make test`: `make unit heavy` runs every test once. Three workers by default on two
# cores (HEAVY_WORKERS=0 runs one process): much of a swarm test is waiting (DHT rounds, timeouts, node
# start-ups), which the other workers fill. Measured in fresh clones: two workers kept the cores 80%
# busy (heavy tier 860 s, at least 10.3 GiB free), three 95% (760 s, at least 6.2 GiB free). A module's
# tests stay on one worker (tests/conftest.py groups them), so its swarm starts once. Few glibc arenas
# keep each worker's heap small; a worker that dies fails the run instead of being replaced mid-tier.
HEAVY_WORKERS ?= 3
heavy: model tools
	$(TEST_ENV) MALLOC_ARENA_MAX=2 $(BIN)/python -m pytest -m "(model or swarm) and not bigmodel and not long" \
	  $(if $(filter-out 0,$(HEAVY_WORKERS)),-n $(HEAVY_WORKERS) --dist loadgroup --no-loadscope-reorder --max-worker-restart=0) $(PYTEST_ARGS)

# The long forms of scenarios CI runs short (hundreds of spot checks, every kill, the whole sweep).
# Line coverage per package of the unit tier (what runs in this process and its xdist workers).
.PHONY: coverage
coverage: install
	$(TEST_ENV) $(BIN)/python -m pytest -m "not model and not swarm and not bigmodel and not long" \
	  $(if $(filter-out 0,$(UNIT_WORKERS)),-n $(UNIT_WORKERS) --dist loadgroup --no-loadscope-reorder) \
	  --cov=ledger --cov=shards --cov=routing --cov=node --cov=swarmlm --cov-report= $(PYTEST_ARGS)
	$(BIN)/python scripts/coverage_by_package.py

.PHONY: long
long: model tools
	$(TEST_ENV) $(BIN)/python -m pytest -m long $(PYTEST_ARGS)

# $(call apt_tool,COMMAND,PACKAGES,WHAT HAPPENS WITHOUT IT): install PACKAGES with apt-get when COMMAND
# is missing, as root; otherwise say what will skip or fail (no commas in the third argument).
apt_tool = @command -v $(1) >/dev/null 2>&1 || { \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $(2); \
  else \
    echo "make $@: $(1) is missing, and installing it needs root and apt-get; $(3): install $(2)."; \
  fi; }

# systemd-analyze verifies the unit in tests/ops/test_systemd.py; slim images lack it.
.PHONY: tools browser nft
tools: browser nft
	$(call apt_tool,systemd-analyze,systemd,tests/ops/test_systemd.py will skip here and fail where CI is set)

# The WAN lab's homes (scripts/wanlab_nat.py) masquerade with nftables in a router namespace.
nft:
	$(call apt_tool,nft,nftables,the WAN lab's NAT tests (tests/wan/test_nat*.py) will fail)

# tests/api/test_dashboard.py drives Debian's chromium through Playwright, which cannot download
# browsers here; without root the test skips and says why.
browser:
	$(call apt_tool,chromium,chromium fonts-dejavu-core,tests/api/test_dashboard.py will skip)

# A synthetic 1.07B-parameter model (packed once into the model cache, ~4 GiB) served by nodes that
# each hold under half of it; minutes on 2 cores, so outside `make test`.
.PHONY: bigmodel
bigmodel: model
	$(BIN)/python -m pytest -m bigmodel tests/big -s $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

# The GPU machine's bundle (scripts/gpu_check.py; README "Checking a GPU"): it reaches no registry and
# has python 3.12 with torch, transformers, safetensors, numpy and msgpack. This builds the project's
# wheel and downloads, for that target, the wheels of every dependency it lacks (versions pinned to
# this venv's by scripts/gpu_requirements.py) plus bitsandbytes; a package with no wheel on the index
# (pure Python, sdist only) is built into one here. Install there with
# `pip install --no-index --find-links $(GPU_WHEELS) swarmlm bitsandbytes`.
GPU_WHEELS ?= dist/gpu-wheels
GPU_PYTHON ?= 3.12
GPU_HAS ?= torch transformers safetensors numpy msgpack
GPU_PLATFORMS ?= manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64
.PHONY: gpu-wheels
gpu-wheels: install
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w $(GPU_WHEELS) .
	$(BIN)/python scripts/gpu_requirements.py --has $(GPU_HAS) --add "bitsandbytes>=0.48" > $(GPU_WHEELS)/requirements.txt
	@# A binary for the target where one exists; else (sdist-only, pure Python) a wheel built here.
	@while read -r req; do \
	  $(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
	    $(addprefix --platform ,$(GPU_PLATFORMS)) -d $(GPU_WHEELS) "$$req" 2>/dev/null \
	  || $(BIN)/python -m pip wheel -q --no-deps -w $(GPU_WHEELS) "$$req" \
	  || { echo "gpu-wheels: no wheel for $$req"; exit 1; }; \
	done < $(GPU_WHEELS)/requirements.txt
	@du -sh $(GPU_WHEELS)
