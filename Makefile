# Build and test entry points of the authentik_ops.backup collection.
#
#   make demo    bring up the test bed and show a backup and a restore (tests/testbed/demo.sh)
#   make test    every quality gate, in order, stopping at the first failure:
#                bootstrap -> venv -> collections-link -> sanity -> lint -> unit -> integration -> matrix
# Both start with `bootstrap` (tests/testbed/bootstrap.sh): as root it installs the Debian packages that are missing
# and starts a Docker engine; as another user it stops with the one command to run when something is missing.
#
# Other targets: help, bootstrap, venv, collections-link, sanity, lint, unit, integration, matrix, bench, bench-smoke,
# clean, distclean.
# Variables: PYTHON (interpreter for a new venv, default python3), VENV (default .venv),
#            SANITY_ARGS (extra ansible-test sanity arguments, e.g. SANITY_ARGS='--test pylint'),
#            PYTEST_ARGS (extra pytest arguments for unit and integration),
#            CORE_MATRIX (the older ansible-core releases `make matrix` tests, each from requirements-<X.Y>.txt).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# `make test` must run its gates one after the other, also under `make -j`.
.NOTPARALLEL:

PYTHON ?= python3
VENV ?= .venv
VENV_BIN := $(abspath $(VENV))/bin
VENV_STAMP := $(VENV)/.requirements-dev.stamp
COLLECTIONS_DIR := .collections
COLLECTION_LINK := $(COLLECTIONS_DIR)/ansible_collections/authentik_ops/backup
SANITY_ARGS ?=
# parallel pytest-xdist workers of `make integration` (each file runs whole in one worker; 1 = no workers)
INTEGRATION_WORKERS ?= 2
PYTEST_ARGS ?=
# Every ansible-core the collection claims (meta/runtime.yml) but the newest, which .venv holds: each gets its own
# venv .venv-<X.Y> from requirements-<X.Y>.txt (that ansible-core, its `ansible` package, the oldest runtime
# libraries claimed) for sanity, the unit tests and MATRIX_TESTS.
CORE_MATRIX ?= 2.18
MATRIX_TESTS := tests/integration/test_smoke.py tests/integration/test_k8s_transport.py
# The code-style tests (pylint, pep8, shellcheck) judge the source, not the ansible-core it runs on: they run once,
# with the newest ansible-core (`make sanity`); under the older ones, every other sanity test runs.
MATRIX_SANITY_ARGS ?= --skip-test pylint --skip-test pep8 --skip-test shellcheck

# Tools run from the venv; ansible.cfg (collections_path = ./.collections) is picked up from the repo root.
export PATH := $(VENV_BIN):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help bootstrap venv collections-link sanity lint unit integration matrix test demo bench bench-smoke clean \
	distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

bootstrap: ## system packages and a Docker engine (installs as root; as another user, says what to run)
	tests/testbed/bootstrap.sh

venv: $(VENV_STAMP) ## create .venv (if missing) and install requirements-dev.txt (exact pins)

$(VENV_STAMP): requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

collections-link: ## link .collections/ansible_collections/authentik_ops/backup to this checkout
	mkdir -p $(dir $(COLLECTION_LINK))
	ln -sfn ../../.. $(COLLECTION_LINK)
	test "$$(cd $(COLLECTION_LINK) && pwd -P)" = "$$(pwd -P)"

sanity: venv ## ansible-test sanity on a copy of the tracked + untracked-not-ignored files
	VENV=$(abspath $(VENV)) tests/run-sanity.sh $(SANITY_ARGS)

lint: venv collections-link ## ansible-lint, production profile, offline (.ansible-lint)
	ansible-lint

unit: venv collections-link ## pytest tests/unit
	@if [ -z "$$(find tests/unit -name 'test_*.py' -print -quit 2>/dev/null)" ]; then \
		echo "unit: no tests in tests/unit"; \
	else \
		python -m pytest --import-mode=importlib -p no:cacheprovider tests/unit $(PYTEST_ARGS); \
	fi

integration: venv collections-link ## pytest tests/integration against the Docker test bed (tests/testbed/engine.sh)
	@if [ -z "$$(find tests/integration -name 'test_*.py' -print -quit 2>/dev/null)" ]; then \
		echo "integration: no tests in tests/integration"; \
	else \
		if [ -x tests/testbed/engine.sh ]; then tests/testbed/engine.sh; fi; \
		bash tests/testbed/images.sh && bash tests/testbed/images-variants.sh && \
		AKBT_DURATIONS_OUT=tests/output/durations.json \
		python -m pytest --import-mode=importlib -p no:cacheprovider $(if $(filter-out 0 1,$(INTEGRATION_WORKERS)),\
			-n $(INTEGRATION_WORKERS) --dist loadfile --no-loadscope-reorder) tests/integration $(PYTEST_ARGS); \
	fi

# One older ansible-core: its venv (kept: .PRECIOUS), then sanity, unit tests and MATRIX_TESTS run with it.
.PRECIOUS: .venv-%/.requirements.stamp
.venv-%/.requirements.stamp: requirements-%.txt
	test -x .venv-$*/bin/python || $(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --disable-pip-version-check -q -r requirements-$*.txt
	touch $@

# sanity (on a copy of the tree, one core mostly) runs beside the unit and MATRIX_TESTS tests; its output is printed
# when it ends (from tests/output/matrix-sanity-<X.Y>.log)
matrix-%: .venv-%/.requirements.stamp collections-link
	@echo "matrix: ansible-core $$(.venv-$*/bin/python -c 'import ansible; print(ansible.__version__)') (.venv-$*)"
	@mkdir -p tests/output
	@VENV=$(abspath .venv-$*) tests/run-sanity.sh $(MATRIX_SANITY_ARGS) $(SANITY_ARGS) \
	     > tests/output/matrix-sanity-$*.log 2>&1 & sanity=$$!; \
	trap 'kill $$sanity 2>/dev/null || true' EXIT; \
	PATH=$(abspath .venv-$*)/bin:$$PATH .venv-$*/bin/python -m pytest --import-mode=importlib -p no:cacheprovider \
		tests/unit $(PYTEST_ARGS) && \
	{ if [ -x tests/testbed/engine.sh ]; then tests/testbed/engine.sh; fi; } && \
	PATH=$(abspath .venv-$*)/bin:$$PATH .venv-$*/bin/python -m pytest --import-mode=importlib -p no:cacheprovider \
		$(MATRIX_TESTS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	wait $$sanity; rc=$$?; trap - EXIT; \
	echo "matrix: sanity under ansible-core $* (tests/output/matrix-sanity-$*.log):"; cat tests/output/matrix-sanity-$*.log; \
	exit $$rc

matrix: $(addprefix matrix-,$(CORE_MATRIX)) ## sanity, unit tests, a backup+restore and the K8s transport on each older ansible-core

# The gates in the order above; the test bed images and the older ansible-cores' venvs (downloads and unpacking,
# mostly) are prepared in the background while sanity, lint and the unit tests run, and waited for before the
# integration tests (their output is printed then, from tests/output/prepare.log).
test: bootstrap venv collections-link ## all gates: sanity, lint, unit, integration, matrix
	@mkdir -p tests/output
	@echo "test: building the test bed images and the venvs of ansible-core $(CORE_MATRIX) in the background"
	@( bash tests/testbed/images.sh && bash tests/testbed/images-variants.sh && \
	   $(MAKE) --no-print-directory $(foreach v,$(CORE_MATRIX),.venv-$(v)/.requirements.stamp) ) \
	     > tests/output/prepare.log 2>&1 & prep=$$!; \
	trap 'kill $$prep 2>/dev/null || true' EXIT; \
	$(MAKE) --no-print-directory sanity lint unit || exit $$?; \
	if wait $$prep; then trap - EXIT; cat tests/output/prepare.log; \
	else rc=$$?; trap - EXIT; cat tests/output/prepare.log; echo "test: preparing the images or venvs failed" >&2; \
	  exit $$rc; fi; \
	$(MAKE) --no-print-directory integration matrix

demo: bootstrap venv collections-link ## run the demo on the test bed (tests/testbed/demo.sh)
	@test -x tests/testbed/demo.sh || { echo "demo: tests/testbed/demo.sh is missing or not executable" >&2; exit 1; }
	tests/testbed/demo.sh

bench: venv collections-link ## run the benchmarks (benchmarks/run.py), printing ratios
	@test -f benchmarks/run.py || { echo "bench: benchmarks/run.py is missing" >&2; exit 1; }
	python benchmarks/run.py

bench-smoke: venv collections-link ## a tiny run of benchmarks/run.py (checks that it runs; figures mean nothing)
	python benchmarks/run.py --smoke --project akbt-bench-smoke --output tests/output/bench-smoke.json

clean: ## remove generated files (keeps .venv)
	rm -rf $(COLLECTIONS_DIR) tests/output .pytest_cache .ansible .cache
	find . \( -path ./$(VENV) -o -path './.venv-*' \) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## clean, and remove .venv and the .venv-<X.Y> of `make matrix`
	rm -rf $(VENV) $(addprefix .venv-,$(CORE_MATRIX))
