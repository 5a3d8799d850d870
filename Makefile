# make demo: the whole guidebook on the embedded default (8x8 digits, normal class 0) into runs/demo
# make test: unit tests and, beside them, every notebook executed on tiny parameters, then checked
#            with nbval and, beside it, the book built from those executed notebooks and checked in
#            headless Chromium
# make book: the book (docs/_build/html) from the notebooks as make demo executed them; it runs the
#            demo first when runs/demo has none. BOOK_NOTEBOOKS=DIR builds from another run's
#            notebooks/ (CI: runs/ci/notebooks), BOOK_OUT=DIR writes the book elsewhere.
PYTHON ?= python3
NPM ?= npm
VENV := .venv
BIN := $(VENV)/bin
BOOK_NOTEBOOKS ?= runs/demo/notebooks
BOOK_OUT ?= docs/_build/html
TEST_JOBS ?= 2
export ANOGAN_GUIDE_QUIET ?= 0

.PHONY: demo test unit-tests notebook-tests ci-notebooks nbval-tests book-tests lint clean book

$(BIN)/anogan-guide: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# the scripts the book serves itself (require.js, the widgets' HTML manager, MathJax), pinned by
# docs/package-lock.json; npm ci writes node_modules/.package-lock.json, which stamps the install
docs/node_modules/.package-lock.json: docs/package.json docs/package-lock.json
	cd docs && $(NPM) ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

demo: $(BIN)/anogan-guide
	$(BIN)/anogan-guide run -f params/demo.yaml --out runs/demo

book: $(BIN)/anogan-guide docs/node_modules/.package-lock.json
	@if [ "$(BOOK_NOTEBOOKS)" = "runs/demo/notebooks" ] && \
	    ! ls runs/demo/notebooks/[0-9][0-9]*_*.ipynb >/dev/null 2>&1; then \
	    echo "make book: runs/demo has no executed notebooks yet: running make demo first"; \
	    $(MAKE) demo; fi
	ANOGAN_BOOK_NOTEBOOKS=$(BOOK_NOTEBOOKS) $(BIN)/sphinx-build -W --keep-going -q -b html \
	    -d $(BOOK_OUT)/../doctrees docs $(BOOK_OUT)
	@echo "the book: $(BOOK_OUT)/index.html (to read it: python3 -m http.server -d $(BOOK_OUT))"

lint: $(BIN)/anogan-guide
	$(BIN)/ruff check anogan_guide tests benchmarks docs/conf.py
	$(BIN)/nbstripout --verify notebooks/*.ipynb

# the unit tests and the notebook checks side by side (make -j3; each line printed whole): the
# CI notebooks run one at a time, mostly on one core, so beside the unit tests they fill the core
# they leave idle; then nbval and the book (built, then checked in Chromium) both read the
# executed notebooks, so they run side by side. Every process one thread: PyTorch's threads
# spin-wait, and processes with a thread per core each run far slower than one after the other.
test: lint
	$(MAKE) --no-print-directory -j3 --output-sync=line unit-tests nbval-tests book-tests

# the unit tests in TEST_JOBS processes (pytest-xdist; a file's tests stay together, so a module's
# fixtures are made once); the 15 slowest are listed, to see where CI's time goes
unit-tests: $(BIN)/anogan-guide
	OMP_NUM_THREADS=1 $(BIN)/pytest -n $(TEST_JOBS) --dist loadfile --durations=15 tests

# every notebook on tiny parameters (runs/ci), checked with nbval, and the book built from them
# and checked in headless Chromium
notebook-tests: nbval-tests book-tests

ci-notebooks: $(BIN)/anogan-guide
	rm -rf runs/ci
	ANOGAN_GUIDE_QUIET=1 OMP_NUM_THREADS=1 $(BIN)/anogan-guide run -f params/ci.yaml --out runs/ci

nbval-tests: ci-notebooks
	OMP_NUM_THREADS=1 $(BIN)/pytest --nbval-lax -p no:cacheprovider runs/ci/notebooks \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --rootdir=.

book-tests: ci-notebooks docs/node_modules/.package-lock.json
	$(MAKE) --no-print-directory book BOOK_NOTEBOOKS=runs/ci/notebooks BOOK_OUT=runs/ci/book/html
	ANOGAN_BOOK_HTML=runs/ci/book/html $(BIN)/pytest -p no:cacheprovider tests/test_book.py

clean:
	rm -rf runs docs/_build docs/_vendor docs/notebooks docs/results docs/api.md \
		docs/_notebook_list.md docs/_module_list.md
