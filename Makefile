# The two commands of the README. Each one creates .venv and installs what it needs first.
#   make book   build the whole book (every notebook executed, preset quick, CPU) into _build/html
#   make test   run the unit tests, the docstrings' examples (doctests) and every notebook (nbval),
#               preset quick, CPU; --dist loadfile
#               keeps all cells of a notebook on one worker, in order; then build the book and
#               open every page in headless Chromium, offline (browser/, needs /usr/bin/chromium)
# Extra: make test-gpu (on a CUDA machine: unit tests on CUDA, every chapter on the gpu preset, a table),
#        make student (the book without solutions or answers, into _build/student/_build/html, and
#        the notebooks a class opens, _build/student/student-notebooks.zip),
#        make bench (installs the peer libraries of bench/requirements.txt, runs every
#        bench/*.py -> bench/results/*.json), make dist (the package's wheel and sdist into
#        dist/, checked as the release workflow checks them), make clean.
# TORCH=cpu (make book TORCH=cpu, make test TORCH=cpu): a new .venv gets torch and torchvision,
#        at the versions requirements.txt pins, from PyTorch's CPU-only wheel index, without the
#        CUDA libraries (about 3 GB). Unset, they come from PyPI as pinned (what CI installs).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SGDLAB_PRESET ?= quick
export SGDLAB_DEVICE ?= cpu
# no progress bars in executed pages (a bar in a page is frozen at its first frame);
# figures are drawn by the kernels' inline backend: MPLBACKEND must not reach them
export SGDLAB_PROGRESS ?= 0
unexport MPLBACKEND
export PYTHONHASHSEED := 0
# KaTeX's stylesheet and fonts, from npm (web/package-lock.json): the book serves them itself
# from _static/ (_config.yml: html_static_path, katex_css_path); the maths is rendered at build time
NODE_STAMP := web/node_modules/.installed
WEB_STATIC := _build/web
TORCH ?=
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_PINS := $(shell sed -n -E 's/^(torch(vision)?==[^ #]+).*/\1/p' requirements.txt)
ifneq ($(filter-out cpu,$(TORCH)),)
$(error TORCH=$(TORCH) is not known: use TORCH=cpu, or leave it unset for PyPI's torch)
endif
# one thread per process: tiny models run faster so, and make test runs two workers on two cores
export OMP_NUM_THREADS ?= 1

.PHONY: book student test test-gpu bench dist clean web-static

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install --quiet --index-url $(TORCH_CPU_INDEX) $(TORCH_PINS))
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

$(NODE_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

web-static: $(NODE_STAMP)
	rm -rf $(WEB_STATIC)
	mkdir -p $(WEB_STATIC)
	mkdir -p $(WEB_STATIC)/katex
	cp -R web/node_modules/katex/dist/katex.min.css web/node_modules/katex/dist/fonts $(WEB_STATIC)/katex/
	cp web/book.css $(WEB_STATIC)/

book: $(STAMP) web-static
	rm -rf _build/html _build/.jupyter_cache _build/.doctrees
	$(BIN)/jupyter-book build . -W -n --keep-going
	$(BIN)/python tools/notebook_times.py _build

# The student edition is built from the notebooks `make book` executed (no second run):
# `make book` first when they are missing or older than the chapters' code.
student: $(STAMP) web-static
	$(BIN)/python tools/student_edition.py --check || $(MAKE) book
	$(BIN)/python tools/student_edition.py _build/student
	$(BIN)/jupyter-book build _build/student/src --path-output _build/student -W -n --keep-going
	cp _build/student/student-notebooks.zip _build/student/_build/html/
	$(BIN)/python tools/student_leaks.py

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile tests --nbval-lax book --doctest-modules sgdlab
	$(MAKE) book
	$(MAKE) student
	$(BIN)/python -m pytest browser

# on a CUDA machine: the unit tests on CUDA, then every chapter on the gpu preset, and one table
# (tools/gpu_check.py; stand-in MNIST/CIFAR-10 are written where the real files are absent)
test-gpu: $(STAMP)
	SGDLAB_PRESET=gpu SGDLAB_DEVICE=cuda SGDLAB_PROGRESS=1 $(BIN)/python tools/gpu_check.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	set -e; for script in bench/*.py; do $(BIN)/python $$script; done

# build and twine (requirements-dev.txt) only: no torch needed to package sgdlab
$(VENV)/.dist-tools: requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

dist: $(VENV)/.dist-tools
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*
	$(BIN)/python tools/check_dist.py dist

clean:
	rm -rf _build $(VENV) web/node_modules dist
