# Two commands for a new user: `make book` and `make test`. Each sets up .venv first (once).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: book test setup student clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

setup: $(STAMP)

## Build the course (chapters executed on the phantom, CPU); reuses executed notebooks that did not change.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --keep-going
	@echo "The book is at $(CURDIR)/_build/html/index.html"

## Build the student edition (solutions left out) into _build/student/html.
student: $(STAMP)
	$(PY) -m aebonet_lib.book student

## Run the whole test suite: library tests, every chapter executed, the strict book build, the pages in a browser.
test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf _build
