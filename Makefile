# colorize: `make test` sets everything up from nothing and runs the tests; `make train` runs
# the reference recipe on the hardware present (all GPUs, one process each, or one CPU process
# using every core: `python -m colorize.commands.launch` prints the command).
# Variables: PYTHON, VENV, DATA (a --data source), DATA_DIR, CONFIG, TRAIN_ARGS, PYTEST_ARGS,
# TEST_WORKERS (pytest processes side by side: each test spends seconds importing FFCV alone;
# the tests of a module marked xdist_group share one worker, and so its module fixtures).
PYTHON ?= python3
VENV ?= .venv
DATA ?= cifar10
DATA_DIR ?= data/cifar10
CONFIG ?= configs/reference.yaml
TRAIN_ARGS ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
# Debian packages FFCV needs to build, and the pkg-config names that show they are present.
SYSTEM_PACKAGES := libturbojpeg0-dev libopencv-dev pkg-config g++
PKG_CONFIG_NAMES := opencv4 libturbojpeg

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-packages lint test test-fast prepare train bench clean

setup: $(STAMP)

system-packages:
	@if pkg-config --exists $(PKG_CONFIG_NAMES) 2>/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing the system packages FFCV needs: $(SYSTEM_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(SYSTEM_PACKAGES) >/dev/null || exit 1; \
	elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(SYSTEM_PACKAGES) >/dev/null || exit 1; \
	else \
		echo "FFCV needs OpenCV 4 and libturbojpeg development files to build." >&2; \
		echo "On Debian or Ubuntu, run: sudo apt-get install $(SYSTEM_PACKAGES)" >&2; \
		echo "(elsewhere: your system's opencv and libjpeg-turbo development packages), then make setup again." >&2; \
		exit 1; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-packages
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

lint: setup
	$(BIN)/ruff check colorize tests

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

prepare: setup
	$(BIN)/colorize prepare --data $(DATA) --out $(DATA_DIR)

train: prepare
	$$($(BIN)/python -m colorize.commands.launch) -m colorize train --config $(CONFIG) data.dir=$(DATA_DIR) $(TRAIN_ARGS)

bench: setup
	$(BIN)/colorize bench loader --data $(DATA_DIR)
	$(BIN)/colorize bench train --data $(DATA_DIR)

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
