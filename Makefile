# Every target does its own set-up on a fresh machine: `make run` and `make test` are all a user types.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch: a torch already importable by $(PYTHON) (a GPU box's build) is kept by giving the venv the
# system site-packages; otherwise the CPU wheel torch==2.13.0 is installed first, so that the
# project's unpinned `torch` requirement is already met and pip never pulls the CUDA packages.
TORCH_PIN ?= torch==2.13.0

# the small default sweep of `make sweep` (any file of configs/sweeps/ works: make sweep SWEEP=...)
SWEEP  ?= configs/sweeps/p_fixed_n.yaml
# `make bench`: each net in each precision, one JSON apiece (results/bench/cpu-KIND-NET-PRECISION.json, KIND
# amx-bf16 or avx2 as the CPU's flags say: the two kinds differ most in bf16); on a
# GPU: make bench BENCH="--device cuda --stack 1,8,32 --rounds 3" BENCH_OUT=cuda \
#   BENCH_NETS=784-1024-1024-2048-10 BENCH_PRECISIONS="tf32 bf16"
BENCH      ?= --device cpu --stack 1,4 --steps 200 --rounds 3
BENCH_NETS ?= 784-1024-1024-1024-10 784-1024-1024-10 784-256-256-10
BENCH_PRECISIONS ?= fp32 bf16
CPU_KIND   := $(shell for f in amx_bf16 avx512_bf16 avx2; do grep -qw $$f /proc/cpuinfo 2>/dev/null && echo $$f | tr _ - && break; done)
BENCH_OUT  ?= cpu-$(or $(CPU_KIND),other)
# `make paper`: every configs/paper/ table and figure at this scale (quick: minutes each on a CPU)
SCALE  ?= quick
PAPER  ?= table2 table9 table10_gaussian fig4 fig9a fig9b fig10 fig11
# extra flags for `make run` and `make sweep`, e.g. FLAGS=--force to retrain runs already in results/
FLAGS  ?=

.PHONY: install data run sweep paper report beyond test gpu-check lint plot bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "keeping the installed torch ($$($(PYTHON) -c 'import torch; print(torch.__version__)'))"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q --disable-pip-version-check $(TORCH_PIN); \
	fi
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@# Ray is optional (--backend ray and its test); a platform without a Ray wheel still gets the rest
	$(BIN)/pip install -q --disable-pip-version-check -e '.[ray]' || echo "Ray is not installable here: --backend ray and its test are skipped"
	@touch $@

data: install
	$(BIN)/dropout-lab data fetch

run: install data
	$(BIN)/dropout-lab run configs/mnist.yaml $(FLAGS)
	$(BIN)/dropout-lab plot results/mnist

sweep: install data
	$(BIN)/dropout-lab sweep $(SWEEP) $(FLAGS)
	$(BIN)/dropout-lab plot results/$(basename $(notdir $(SWEEP)))

paper: install data
	for c in $(PAPER); do $(BIN)/dropout-lab sweep configs/paper/$$c.yaml --scale $(SCALE) $(FLAGS) || exit 1; done
	$(BIN)/dropout-lab plot
	$(BIN)/dropout-lab report

# results/REPORT.md from the results folders already there: no training
report: install
	$(BIN)/dropout-lab report

# the experiments beyond the paper's tables: section 9.1 (dropout vs its ridge penalty), Figures 7/8
beyond: install data
	$(BIN)/dropout-lab beyond ridge
	$(BIN)/dropout-lab beyond features configs/paper/fig8.yaml

# two test processes, one torch thread each (tests/conftest.py), a module's tests in one process so that its
# trained fixtures are trained once: about 40% less time than one process on a 2-core CPU (README, Tests)
TEST_WORKERS ?= 2
test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope

# The one script for the day a GPU is lent (CI has none), sized for 8 minutes on one GPU (not yet run on one), no network once
# installed: the CUDA tests (stack equivalence, reproducibility), the bench of the paper's widest MLP at
# K = 1, 8, 32 in tf32 and bf16, then Table 2's two 3x1024 ReLU rows at full length, every seed as one
# stack, stopped with a checkpoint after GPU_TABLE2_SECONDS (the same target resumes them). A verified
# MNIST cache in data/ (cp ~/.cache/dropout-lab/mnist.npz data/) is used where there is no network.
GPU_TABLE2_SECONDS ?= 240
GPU_DATA := $(if $(wildcard data/mnist.npz),DROPOUT_LAB_DATA=data,)
gpu-check: install
	$(GPU_DATA) $(BIN)/pytest -m gpu -rs
	for p in tf32 bf16; do $(GPU_DATA) $(BIN)/dropout-lab bench --device cuda --arch 784-1024-1024-2048-10 \
		--stack 1,8,32 --steps 200 --rounds 3 --precision $$p \
		--json results/bench/cuda-784-1024-1024-2048-10-$$p.json || exit 1; done
	$(GPU_DATA) timeout -s INT $(GPU_TABLE2_SECONDS) $(BIN)/dropout-lab sweep configs/paper/table2.yaml \
		--only label="dropout ReLU 3x1024" --only label="dropout + max-norm ReLU 3x1024" --device cuda \
		--precision tf32 --out results; rc=$$?; [ $$rc = 0 ] || [ $$rc = 124 ] || [ $$rc = 130 ] || exit $$rc
	@echo "results: results/bench/cuda-784-1024-1024-2048-10-{tf32,bf16}.json, and the tf32 runs in results/table2/"

lint: install
	$(BIN)/ruff check dropout_lab tests

bench: install
	for a in $(BENCH_NETS); do for p in $(BENCH_PRECISIONS); do \
		$(BIN)/dropout-lab bench $(BENCH) --arch $$a --precision $$p \
			--json results/bench/$(BENCH_OUT)-$$a-$$p.json || exit 1; done; done

# every results folder that changed since it was last plotted
plot: install
	$(BIN)/dropout-lab plot

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
