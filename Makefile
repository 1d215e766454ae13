# One-command set-up: `make demo` (build a collection over a generated sample and query it)
# and `make test` (run the test suite). Both create .venv with the pinned CPU torch first,
# so pip never resolves a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
# PyTorch's CPU-only wheels; where that index cannot be reached, the pin alone (a mirror's wheel)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP  := $(VENV)/.installed

BROWSER := $(VENV)/.browser

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --retries 0 --timeout 20 $(TORCH) --index-url $(TORCH_INDEX) 2>/dev/null \
		|| { echo "$(TORCH_INDEX) not reachable: installing $(TORCH) from pip's configured index"; \
		     $(BIN)/pip install --quiet $(TORCH); }
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/hashae sample indexes/sample
	$(BIN)/hashae index indexes/sample --store indexes/sample.h5 --effort fast
	$(BIN)/hashae info --store indexes/sample.h5
	$(BIN)/hashae query indexes/sample/circle/circle_000.png --store indexes/sample.h5 -k 5 --sheet indexes/sample-query.png

# headless Chromium for the browser test of `hashae serve` (Debian's packages; as root). Where it
# cannot be installed the test is skipped and says why.
$(BROWSER):
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) \
			>/dev/null 2>&1 || echo "chromium could not be installed: the browser test will be skipped"; \
	else echo "not root or no apt-get: chromium not installed, the browser test will be skipped"; fi
	@mkdir -p $(VENV) && touch $@

test: $(STAMP) $(BROWSER)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) indexes/*.h5 indexes/sample build *.egg-info
