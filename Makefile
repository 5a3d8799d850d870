# make demo: the whole guidebook on the embedded default (8x8 digits, normal class 0) into runs/demo
# make test: unit tests, then every notebook executed on tiny parameters and checked with nbval
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ANOGAN_GUIDE_QUIET ?= 0

.PHONY: demo test lint clean

$(BIN)/anogan-guide: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

demo: $(BIN)/anogan-guide
	$(BIN)/anogan-guide run -f params/demo.yaml --out runs/demo

lint: $(BIN)/anogan-guide
	$(BIN)/ruff check anogan_guide tests benchmarks
	$(BIN)/nbstripout --verify notebooks/*.ipynb

test: lint
	$(BIN)/pytest tests
	rm -rf runs/ci
	ANOGAN_GUIDE_QUIET=1 $(BIN)/anogan-guide run -f params/ci.yaml --out runs/ci
	$(BIN)/pytest --nbval-lax -p no:cacheprovider runs/ci/notebooks \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --rootdir=.

clean:
	rm -rf runs
