# compare-models: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= cifar10
RESNET_WEIGHTS ?= imagenet
PRESET ?= demo
export PREFECT_SERVER_ANALYTICS_ENABLED = false
export TF_CPP_MIN_LOG_LEVEL = 2

.PHONY: install up down status demo run-local test test-unit lint bench reference docs docs-serve screenshot clean

# The environment, from pyproject.toml: uv installs the same versions as pip, faster (measured in
# docs/benchmarks.md, "The environment"). It compiles the bytecode at install, as pip does: where
# PYTHONDONTWRITEBYTECODE is set (as on our CI machines) nothing would be cached later, and every
# process would compile TensorFlow's modules again. `make INSTALLER=pip` uses pip alone, as does
# the fallback when uv cannot be installed or cannot reach the index (uv does not read pip.conf:
# behind a private mirror, set UV_INDEX_URL or use INSTALLER=pip).
INSTALLER ?= uv
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if [ "$(INSTALLER)" = uv ] && $(BIN)/pip install --quiet 'uv>=0.9,<1' \
	    && $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[test]'; then :; else \
	  [ "$(INSTALLER)" = pip ] || echo "uv failed or is not available: installing with pip" >&2; \
	  $(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e '.[test]'; \
	fi
	touch $@

install: $(BIN)/.installed

up: install  ## start the local S3 (SeaweedFS) and Prefect server
	$(BIN)/compare-models up

down: install
	$(BIN)/compare-models down

status: install
	$(BIN)/compare-models status

# The users' way, on one machine: local S3 + Prefect server + a CPU worker and a "GPU"
# worker (on CPU here), deploy prefect.yaml, trigger compare-models/nightly with the demo
# preset (5,000 / 1,000 / 2,000 real CIFAR-10 images; the CNN 6 epochs, ResNet50 2) through
# `prefect deployment run`, show its trainings as they go (`compare-models watch`: a bar per
# training on a terminal, epoch lines elsewhere) until it ends, then print the run's report.
# DATA defaults to the official download; offline, pass a copy:
#   make demo DATA=../shared/data/cifar10-jpeg.tar.gz RESNET_WEIGHTS=none
demo: install
	$(BIN)/compare-models up --workers
	$(BIN)/compare-models deploy
	$(BIN)/prefect deployment run 'compare-models/nightly' \
	  --params "$$($(BIN)/compare-models params --preset $(PRESET) --data $(DATA) --resnet-weights $(RESNET_WEIGHTS) --trainer deployment)"
	$(BIN)/compare-models watch
	$(BIN)/compare-models show

# The same run without workers or deployments, in this process (trainings as subprocesses).
run-local: up
	$(BIN)/compare-models run --preset $(PRESET) --data $(DATA) --resnet-weights $(RESNET_WEIGHTS)

# The tests run against a stack of their own (tests/support/stack.py: other ports, .compare-models/test-stack),
# never the user's services. Three pytest processes share the 2 cores (a test spends part of its
# time waiting on training subprocesses and the services). The tests that restart S3 (marked serial) run meanwhile, one at a time,
# on a second test stack of their own (ports moved by SERIAL_STACK_SHIFT, clear of test_prefect_auth's
# +50 and test_postgres_stack's multiples of 100 from the default stack); their output follows the
# others'. Both test stacks stop at the end.
SERIAL_STACK_SHIFT ?= 25
SERIAL_LOG = .compare-models/serial-tests.log
test: lint  ## lint, then unit + integration tests against the test stack's real services
	mkdir -p .compare-models; status=0; \
	TEST_STACK_PORT_SHIFT=$(SERIAL_STACK_SHIFT) $(BIN)/python -m pytest -q -p no:cacheprovider -m serial \
	  >$(SERIAL_LOG) 2>&1 & serial=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 3 --dist loadfile -m "not serial" || status=$$?; \
	wait $$serial || status=$$?; \
	echo "── the serial tests, on their own test stack:"; cat $(SERIAL_LOG); \
	$(BIN)/python -m tests.support.stack down; \
	TEST_STACK_PORT_SHIFT=$(SERIAL_STACK_SHIFT) $(BIN)/python -m tests.support.stack down; \
	exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test-unit: install  ## no services: tests/unit, tests/infra and the hostile-input corpus
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/infra tests/hostile

bench: up  ## real-data benchmarks (minutes); JSON lines to stdout and benchmarks/results/
	$(BIN)/python -m benchmarks.speed.data_stage
	$(BIN)/python -m benchmarks.speed.throughput
	$(BIN)/python -m benchmarks.studies.seed_protocol
	$(BIN)/python -m benchmarks.speed.orchestration

# The reference pages of the docs, generated from the code (the CLI's parser, RunParams,
# Settings, layout.py, the manifest's record, the events, the input caps): run it after
# changing any of them; tests/unit/test_docs_reference.py fails while a page is stale.
reference: install
	$(BIN)/python -m tools.docs_reference

# The documentation site (MkDocs + Material, mkdocs.yml): its tools are the `docs` extra of
# pyproject.toml, installed into the same environment on first use. `docs` fails on any broken
# link or page left out of the nav (--strict), and on a reference page the code has outgrown.
$(BIN)/.docs-installed: $(BIN)/.installed
	if [ "$(INSTALLER)" = uv ] && [ -x $(BIN)/uv ]; then \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test,docs]'; \
	else $(BIN)/pip install --quiet -e '.[test,docs]'; fi
	touch $@

docs: $(BIN)/.docs-installed  ## build the documentation site into site/
	$(BIN)/python -m tools.docs_reference --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(BIN)/.docs-installed  ## serve the documentation on http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

# docs/images/report.png, the picture of the report in the README and the docs, by headless
# Chromium (Debian's `chromium` package; see tools/report_screenshot.py). Of the latest run in
# the configured bucket, or REPORT=path/to/index.html, or RUN=<run id>.
screenshot: install
	$(BIN)/python tools/report_screenshot.py $(if $(REPORT),--report $(REPORT)) $(if $(RUN),--run-id $(RUN))

clean:
	rm -rf $(VENV) build *.egg-info site
