# glide-minimal: the README's commands.
#   make book    build the book into _build/html (warnings are errors)
#   make test    lint, unit tests, strict nbval on every chapter notebook, the GPU branch in smoke mode, the
#                book build, the browser check
# Everything runs inside .venv (created and kept in sync with requirements-ci.txt by `make venv`).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUILD_DIR := _build
HTML_DIR := $(BUILD_DIR)/html
NOTEBOOKS := $(wildcard book/*.ipynb)
# pytest-xdist workers; 2 matches the project's 2-core machines.
JOBS ?= 2

# MPLBACKEND=Agg (set by some CI images) silently drops every figure from notebooks and the book.
unexport MPLBACKEND
# Threads: not set globally. Each notebook sets its own (torch.set_num_threads) so its printed numbers
# are reproducible; only the unit tests, run as $(JOBS) parallel workers, get one thread each.
UNIT_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

BOOK_BUILD := $(BIN)/jupyter-book build . -W -n --keep-going

.PHONY: help venv book test test-unit test-notebooks test-smoke test-book test-pages lint clean chromium vendor diagrams

help:
	@echo "make venv       create .venv and install requirements-ci.txt + this package (--no-deps)"
	@echo "make book       build the book into $(HTML_DIR)"
	@echo "make test       lint, unit tests, nbval on book/*.ipynb, GPU branch in smoke mode, book build, browser check"
	@echo "make wheel-check build the wheel, install it (no -e) into a fresh venv, run the README quick start"
	@echo "make lint       ruff check (pyproject.toml's settings)"
	@echo "make chromium   install Debian's chromium for the browser check (root)"
	@echo "make vendor     re-vendor require.js, html-manager and MathJax from npm"
	@echo "make diagrams   redraw book/images/*.png"
	@echo "make clean      remove build outputs (keeps .venv)"

# ---- environment ---------------------------------------------------------------------------------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the requirements or the package metadata changed. The package goes in with
# --no-deps after the pinned set, so nothing re-resolves torch (a bare `torch` pulls a CUDA build).
$(STAMP): requirements-ci.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-ci.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

venv: $(STAMP)

# ---- the book ------------------------------------------------------------------------------------

book: venv
	$(BOOK_BUILD)
	@echo "open $(HTML_DIR)/index.html"

# ---- tests ---------------------------------------------------------------------------------------

test: venv
	@start=$$(date +%s); \
	stage() { local t0=$$(date +%s); echo "== $$1"; $(MAKE) --no-print-directory $$1; \
	          echo "== $$1 done in $$(( $$(date +%s) - t0 )) s"; }; \
	stage lint; stage test-unit; stage test-notebooks; stage test-smoke; stage test-book; stage test-pages; \
	echo "== make test passed in $$(( $$(date +%s) - start )) s"

test-unit: venv
	$(UNIT_ENV) $(BIN)/python -m pytest tests -x -q -n $(JOBS)

# Strict nbval: stored outputs must match a fresh execution (text, after tests/nbval_sanitize.cfg).
# The notebooks are re-executed under a second CPU code path (ATen's portable kernels, oneDNN capped at
# AVX2), while their stored outputs come from the native one (e.g. AVX512). A printed digit that depends
# on the machine then fails here, not on a reader's laptop or an ARM Mac. `make test NBVAL_CPU=` runs
# the native path instead.
NBVAL_CPU ?= ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2
# $(JOBS) notebooks at a time (whole notebooks: --dist loadfile), each kernel with one thread
# (GLIDE_MINIMAL_THREADS: gm.tier() applies it over the chapter's torch.set_num_threads(2); two 2-thread
# kernels on 2 cores would slow each other several-fold, as OpenMP threads spin while they wait). Small
# networks gain little from a second thread: on a 2-core Xeon all 8 chapters took 37 min this way, about
# 40 min one 2-thread kernel after another. -p no:cacheprovider leaves no .pytest_cache.
test-notebooks: venv
ifeq ($(strip $(NOTEBOOKS)),)
	@echo "no book/*.ipynb yet: nbval skipped"
else
	$(NBVAL_CPU) GLIDE_MINIMAL_THREADS=1 $(BIN)/python -m pytest --nbval --nbval-current-env book/ \
		--nbval-sanitize-with tests/nbval_sanitize.cfg \
		-n $(JOBS) --dist loadfile -p no:cacheprovider
endif

# A fresh build: Sphinx only reports warnings for pages it re-reads, so an incremental build could
# hide one, and stale pages of a removed chapter would be browser-checked.
# The GPU branch of the chapters, on CPU in smoke mode (README "Running on a GPU"): each chapter runs top to
# bottom on seconds-trained stand-ins of its GPU-tier models, in a scratch copy with a fresh cache; two
# chapters at a time, one thread each.
test-smoke: venv
	$(BIN)/python scripts/run_book.py --smoke --jobs 2

test-book: venv
	rm -rf $(BUILD_DIR)
	$(BOOK_BUILD)

test-pages: venv
	$(BIN)/python scripts/check_pages.py --build-dir $(HTML_DIR)

# The wheel check (issue 18): python -m build, a fresh venv with torch first and the wheel without -e, the
# shipped checkpoints from the installed package data, README.md's quick start run from outside the
# repository; prints the wheel's size. About 4 minutes on 2 cores (scripts/check_wheel.py says what it checks).
.PHONY: wheel-check
wheel-check: venv
	$(BIN)/python scripts/check_wheel.py

# ---- odds and ends -------------------------------------------------------------------------------

# ruff (pinned in requirements-ci.txt; settings in pyproject.toml). .pre-commit-config.yaml runs the same.
lint: venv
	$(BIN)/ruff check glide_minimal tests scripts setup.py

# Debian's chromium for scripts/check_pages.py (CI runs as root; elsewhere run with sudo).
chromium:
	@if [ -x /usr/bin/chromium ]; then echo "chromium present: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	else apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; fi

vendor:
	scripts/vendor_js.sh

diagrams: venv
	$(BIN)/python scripts/make_diagrams.py

clean:
	rm -rf $(BUILD_DIR) .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name .ipynb_checkpoints -type d -exec rm -rf {} +
