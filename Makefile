# The two commands of the README. Each one creates .venv and installs what it needs first.
#   make book   build the whole book (every notebook executed, preset quick, CPU) into _build/html
#   make test   run the unit tests and every notebook (nbval), preset quick, CPU; --dist loadfile
#               keeps all cells of a notebook on one worker, in order
# Extra: make student (the book without solutions, into _build/student/_build/html),
#        make bench (installs the peer libraries of bench/requirements.txt, runs every
#        bench/*.py -> bench/results/*.json), make clean.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SGDLAB_PRESET ?= quick
export SGDLAB_DEVICE ?= cpu
export MPLBACKEND ?= Agg
export PYTHONHASHSEED := 0
# one thread per process: tiny models run faster so, and make test runs two workers on two cores
export OMP_NUM_THREADS ?= 1

.PHONY: book student test bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

book: $(STAMP)
	rm -rf _build/html _build/.jupyter_cache _build/.doctrees
	$(BIN)/jupyter-book build . -W -n --keep-going
	$(BIN)/python tools/notebook_times.py _build

student: $(STAMP)
	mkdir -p _build/student
	$(BIN)/python tools/student_config.py _build/student/_config.yml
	$(BIN)/jupyter-book build . --config _build/student/_config.yml --path-output _build/student -W -n --keep-going

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile tests --nbval-lax book

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	set -e; for script in bench/*.py; do $(BIN)/python $$script; done

clean:
	rm -rf _build $(VENV)
