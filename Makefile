# `make train` sets everything up on a fresh machine (venv, torch, imgrec, Fashion-MNIST) and trains
# the default model; `make test` runs the test suite. Both are idempotent. The venv's `imgrec` runs every verb.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data train test test-fast lint ui dashboard serve clean

setup: $(BIN)/.installed data

# torch first and pinned: a bare `pip install torch` (or a dependency asking for a newer one) pulls CUDA wheels.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	@! $(BIN)/pip show --quiet torchvision 2>/dev/null || { echo "torchvision is installed in $(VENV): it breaks Lightning with a CPU torch; pip uninstall torchvision"; exit 1; }
	touch $@

# Real Fashion-MNIST (70k images), the default dataset: Debian's package, else the checksummed download
# (SHA256-pinned, into data/fashion_mnist, where training looks first).
data: $(BIN)/.installed
	@[ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ] || [ -f data/fashion_mnist/train-images-idx3-ubyte.gz ] || \
	  { $(SUDO) apt-get install -y dataset-fashion-mnist 2>/dev/null || \
	    { $(SUDO) apt-get update 2>/dev/null && $(SUDO) apt-get install -y dataset-fashion-mnist 2>/dev/null; }; } || \
	  $(BIN)/python -c 'from imgrec.data.catalog import locate; print("Fashion-MNIST in", locate("fashion_mnist", "data/fashion_mnist", True))'

train: setup
	$(BIN)/python train.py $(ARGS)

# Two test workers on two cores, one thread each (torch, BLAS, and the commands the tests start): more threads
# than cores spin against each other.
TEST_THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
test: setup
	$(TEST_THREADS) $(BIN)/python -m pytest -n 2 --dist worksteal $(ARGS)

# The inner loop: every test that trains nothing and starts no server (under 2 minutes here)
test-fast: setup
	$(TEST_THREADS) $(BIN)/python -m pytest -n 2 --dist worksteal -m "not trains" $(ARGS)

lint: setup
	$(BIN)/ruff check .

# make ui: the MLflow UI on MLFLOW_TRACKING_URI (a server is opened in the browser as it is), else mlruns/mlflow.db
ui: setup
	@case "$${MLFLOW_TRACKING_URI:-}" in http://*|https://*) echo "the runs are on $$MLFLOW_TRACKING_URI: open it in a browser";; \
	  *) echo "open http://127.0.0.1:5000/#/?workflowType=machine_learning (MLflow's model-training view)"; \
	     $(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db}";; esac

# make dashboard [STORAGE=postgresql://...] [DASHBOARD_PORT=8080]: every Optuna study of the sweeps' storage
STORAGE ?= sqlite:///outputs/sweeps/optuna.db
DASHBOARD_PORT ?= 8080
dashboard: setup
	$(BIN)/optuna-dashboard "$(STORAGE)" --host 127.0.0.1 --port $(DASHBOARD_PORT)

# make serve MODEL=models:/fmnist-cnn@champion [PORT=5001]: POST /invocations {"inputs": N x C x H x W [0, 1] floats}
PORT ?= 5001
serve: setup
	@[ -n "$(MODEL)" ] || { echo "usage: make serve MODEL=models:/<name>@<alias> [PORT=5001]"; exit 2; }
	$(BIN)/imgrec serve model="$(MODEL)" port=$(PORT)

clean:
	rm -rf outputs mlruns .pytest_cache
