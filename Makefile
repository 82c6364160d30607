# `make train` sets everything up on a fresh machine (venv, torch, imgrec, Fashion-MNIST) and trains
# the default model; `make test` runs the test suite. Both are idempotent.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data train test ui dashboard serve clean

setup: $(BIN)/.installed data

# torch first and pinned: a bare `pip install torch` (or a dependency asking for a newer one) pulls CUDA wheels.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	@! $(BIN)/pip show --quiet torchvision 2>/dev/null || { echo "torchvision is installed in $(VENV): it breaks Lightning with a CPU torch; pip uninstall torchvision"; exit 1; }
	touch $@

# Real Fashion-MNIST (70k images) from Debian: the default dataset, found without a download.
data:
	@[ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ] || \
	  { $(SUDO) apt-get install -y dataset-fashion-mnist || { $(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; }; }

train: setup
	$(BIN)/python train.py $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db

# make dashboard [STORAGE=postgresql://...] [DASHBOARD_PORT=8080]: every Optuna study of the sweeps' storage
STORAGE ?= sqlite:///outputs/sweeps/optuna.db
DASHBOARD_PORT ?= 8080
dashboard: setup
	$(BIN)/optuna-dashboard "$(STORAGE)" --host 127.0.0.1 --port $(DASHBOARD_PORT)

# make serve MODEL=models:/fmnist-cnn@champion [PORT=5001]: POST /invocations {"inputs": N x C x H x W [0, 1] floats}
# (--env-manager local: this venv, nothing downloaded; the venv's bin on PATH, where mlflow finds uvicorn)
PORT ?= 5001
serve: setup
	@[ -n "$(MODEL)" ] || { echo "usage: make serve MODEL=models:/<name>@<alias> [PORT=5001]"; exit 2; }
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db} \
	  $(BIN)/mlflow models serve -m "$(MODEL)" --env-manager local -h 127.0.0.1 -p $(PORT)

clean:
	rm -rf outputs mlruns .pytest_cache
