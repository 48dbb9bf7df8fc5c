# Two commands for a new user: `make book` and `make test`. Each sets up .venv first (once).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: book book-real test setup student sync wheel browser clean

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

## Build the real-data edition: make book-real DATA=/path/to/rsna [PRESET=rsna-cpu]; into _build/real-PRESET.
book-real: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make book-real DATA=/path/to/rsna-bone-age [PRESET=rsna-cpu] (PRESET defaults to paper, a GPU's)"; exit 2; }
	AEBONET_DATA="$(abspath $(DATA))" AEBONET_PRESET="$(PRESET)" $(VENV)/bin/jupyter-book build . \
	  --path-output _build/real-$(or $(PRESET),paper) --keep-going
	@echo "The real-data book is at $(CURDIR)/_build/real-$(or $(PRESET),paper)/_build/html/index.html"

## Build the student edition (solutions left out): _build/student/_build/html and _build/student/notebooks.
student: $(STAMP)
	$(PY) tools/book.py student

## After editing a chapter: rewrite its paired .ipynb (for Colab) and the Colab set-up cell.
sync: $(STAMP)
	$(PY) tools/book.py sync

## Build the library's wheel into dist/, to upload to Colab when the repository is not published (book/colab.md).
## Needs only pip (no .venv): pip fetches the build backend itself.
wheel:
	$(PYTHON) -m pip wheel --quiet --no-deps -w dist .
	@ls -1 dist/aebonet_lib-*.whl

## Run the whole test suite: library tests, every chapter executed, the strict book build, the pages in a browser.
test: $(STAMP) browser
	$(PY) -m pytest

# Headless Chromium (Debian's package) checks the built pages; installed once, when missing.
browser:
	@command -v chromium >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "warning: could not install chromium; the browser checks will be skipped"

clean:
	rm -rf _build
