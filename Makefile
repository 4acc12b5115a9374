# The two commands of the README. Each one creates .venv and installs what it needs first.
#   make book   build the whole book (every notebook executed, preset quick, CPU) into _build/html
#   make test   run the unit tests and every notebook (nbval), preset quick, CPU; --dist loadfile
#               keeps all cells of a notebook on one worker, in order; then build the book and
#               open every page in headless Chromium, offline (browser/, needs /usr/bin/chromium)
# Extra: make student (the book without solutions, into _build/student/_build/html),
#        make bench (installs the peer libraries of bench/requirements.txt, runs every
#        bench/*.py -> bench/results/*.json), make clean.

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
# MathJax, from npm (web/package-lock.json): the book serves it itself from _static/
# (_config.yml: html_static_path, mathjax_path, mathjax3_config)
NODE_STAMP := web/node_modules/.installed
WEB_STATIC := _build/web
# one thread per process: tiny models run faster so, and make test runs two workers on two cores
export OMP_NUM_THREADS ?= 1

.PHONY: book student test bench clean web-static

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
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
	cp -R web/node_modules/mathjax/es5 $(WEB_STATIC)/mathjax

book: $(STAMP) web-static
	rm -rf _build/html _build/.jupyter_cache _build/.doctrees
	$(BIN)/jupyter-book build . -W -n --keep-going
	$(BIN)/python tools/notebook_times.py _build

student: $(STAMP) web-static
	mkdir -p _build/student
	$(BIN)/python tools/student_config.py _build/student/_config.yml
	$(BIN)/jupyter-book build . --config _build/student/_config.yml --path-output _build/student -W -n --keep-going

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile tests --nbval-lax book
	$(MAKE) book
	$(BIN)/python -m pytest browser

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	set -e; for script in bench/*.py; do $(BIN)/python $$script; done

clean:
	rm -rf _build $(VENV) web/node_modules
