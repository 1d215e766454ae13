# One-command set-up: `make demo` (build a collection over a generated sample and query it)
# and `make test` (run the test suite). Both create .venv with the pinned CPU torch first,
# so pip never resolves a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/hashae sample indexes/sample
	$(BIN)/hashae index indexes/sample --store indexes/sample.h5
	$(BIN)/hashae info --store indexes/sample.h5
	$(BIN)/hashae query indexes/sample/circle/circle_000.png --store indexes/sample.h5 -k 5 --sheet indexes/sample-query.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) indexes/*.h5 indexes/sample build *.egg-info
