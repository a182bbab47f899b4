# One runner for every gate: venv, gen, lint, typecheck, test, bench, run.
# Everything installs into .venv from requirements.lock, so a fresh machine needs only python3 (>= 3.11).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PROTOS := $(shell find protos -name '*.proto')
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv system-deps gen descriptors docs lint typecheck test test-fast bench run dev-ca lock breaking clean

help:
	@echo "make run        start the whole stack on embedded defaults"
	@echo "                (PROMETHEUS=1: also a local Prometheus with the alert rules)"
	@echo "make test       lint, typecheck and the full test suite (what CI runs)"
	@echo "make bench      benchmarks side by side with their raw building blocks"
	@echo "make gen        regenerate Python code and stubs from protos/"
	@echo "make descriptors  rewrite protos/agentic.protoset, the contract as one descriptor set"
	@echo "make docs       render the README tables and docs/api.md from their declarations"
	@echo "make lint       buf format/lint, ruff check/format"
	@echo "make typecheck  mypy --strict on hand-written code"

$(VENV)/.installed: requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "agentic-backend needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	@# The repo root and the generated-code root are the two import roots (like an editable install).
	@echo -e "$(CURDIR)\n$(CURDIR)/build/gen" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/agentic-backend.pth"
	@touch $@

# The `agentic` CLI as a command of the venv: a wrapper around `python -m cli`, since the
# repository is used in place (the .pth above) rather than installed as a package.
$(BIN)/agentic: $(VENV)/.installed
	@printf '#!/bin/sh\nexec "%s" -m cli "$$@"\n' "$(CURDIR)/$(PY)" > $@ && chmod +x $@

venv: $(VENV)/.installed $(BIN)/agentic

# The system packages the stack needs: memcached, and rabbitmq-server (a private node is
# started when no broker runs; the fault tests always start their own); for the compliance
# report's PDF (WeasyPrint), Pango with its FreeType backend, HarfBuzz's subsetter (font
# subsets; WeasyPrint warns without it) and a font; pg_dump and pg_restore for the backups
# of a PostgreSQL database (python -m server.backup); Node and npm for the Node client
# example (tests/examples), tmux for the CLI's real-terminal test (tests/cli). Installed from Debian's packages when
# missing and we may (root with apt-get); otherwise a clear message. Each entry is
# package:probe, the probe a command on PATH, an executable, or a file that must exist
# (libraries in Debian's multiarch directory, named by gcc or, without gcc, by Python's
# own build configuration).
MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null || $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("MULTIARCH") or "")')
LIBDIR := /usr/lib/$(MULTIARCH)
SYSTEM_PACKAGES := memcached:memcached rabbitmq-server:/usr/lib/rabbitmq/bin/rabbitmq-server \
	libpango-1.0-0:$(LIBDIR)/libpango-1.0.so.0 libpangoft2-1.0-0:$(LIBDIR)/libpangoft2-1.0.so.0 \
	libharfbuzz-subset0:$(LIBDIR)/libharfbuzz-subset.so.0 \
	fonts-dejavu-core:/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
	postgresql-client:pg_restore nodejs:node npm:npm tmux:tmux
# Packages wanted only for a command they ship, not for their daemon: promtool (checks and
# unit-tests deploy/prometheus/alerts.yml) from prometheus. They are installed without their
# recommends (prometheus recommends prometheus-node-exporter, another daemon), and the
# service a package's postinst may have started is stopped and disabled again, so that
# installing them leaves no process running and no port taken.
TOOL_PACKAGES := prometheus:promtool
system-deps:
	@missing=""; tools=""; for entry in $(SYSTEM_PACKAGES) $(TOOL_PACKAGES); do \
		pkg=$${entry%%:*}; probe=$${entry#*:}; \
		command -v "$$probe" >/dev/null 2>&1 || [ -x "$$probe" ] || [ -e "$$probe" ] || \
		case " $(TOOL_PACKAGES) " in *" $$entry "*) tools="$$tools $$pkg";; *) missing="$$missing $$pkg";; esac; \
	done; \
	if [ -n "$$missing$$tools" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing$$missing$$tools (Debian packages)"; \
			apt-get update -qq || exit 1; \
			if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; fi; \
			if [ -n "$$tools" ]; then \
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$tools >/dev/null || exit 1; \
				for pkg in $$tools; do \
					if [ -d /run/systemd/system ]; then systemctl disable --now "$$pkg" >/dev/null 2>&1 || true; \
					elif [ -x "/etc/init.d/$$pkg" ]; then "/etc/init.d/$$pkg" stop >/dev/null 2>&1 || true; fi; \
				done; \
			fi; \
		else \
			echo "missing system packages:$$missing$$tools; run 'sudo apt-get install$$missing$$tools'"; exit 1; \
		fi; \
	fi

build/.gen: $(VENV)/.installed protos/codegen.py $(PROTOS)
	$(PY) protos/codegen.py
	@touch $@

gen: build/.gen $(BIN)/agentic

# The committed, self-contained descriptor set of the whole contract, for clients without
# our toolchain (grpcurl -protoset, Node's proto-loader; tests/test_descriptors.py fails
# when it is stale). Offline: protoc and the imported files come from the venv's packages.
descriptors: $(VENV)/.installed
	$(PY) -m devtools.descriptors

# The README's configuration tables, rendered from the config dataclasses, and its roles table,
# rendered from server/access/_table.py (tests/test_docs.py and test_access_matrix.py fail
# when they are stale).
# The API reference docs/api.md is rendered here too, from the protos' descriptors and the
# roles table. Not by `make gen`: CI runs gen first, and a stale committed page must fail
# tests/test_api_reference.py rather than be rewritten before it is checked.
docs: gen
	$(PY) -m devtools.configdocs
	$(PY) -m server.access
	$(PY) -m devtools.apidocs

lint: gen breaking
	$(BIN)/buf format -d --exit-code protos
	$(BIN)/buf lint build/protos.binpb --path agentic
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: gen
	$(BIN)/mypy

# The suite on TEST_WORKERS processes (pytest-xdist): its tests spend most of their time
# waiting on the real processes they start, so two workers on two cores halve the wall time.
# Whole modules go to one worker (--dist loadfile): a module's stack starts once.
TEST_WORKERS ?= 2
test: system-deps lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: system-deps gen
	$(BIN)/pytest -x -q

bench: system-deps gen
	$(PY) -m bench

# PROMETHEUS=1 also starts a local Prometheus (127.0.0.1:9090) scraping the stack with the
# rules of deploy/prometheus/alerts.yml.
run: system-deps gen
	AGENTIC_RUN_PROMETHEUS=$(PROMETHEUS) $(PY) -m devtools.devstack

# A local development CA with certificates for the API server, the cache sidecar and the
# server's client identity towards the sidecar (mTLS); existing files are kept.
dev-ca: $(VENV)/.installed
	$(PY) -m devtools.devca --dir var/tls

lock:
	$(PYTHON) -m venv build/lockenv
	build/lockenv/bin/pip install --quiet -r requirements.in
	(echo "# Generated by 'make lock' from requirements.in; do not edit by hand."; build/lockenv/bin/pip freeze) > requirements.lock
	rm -rf build/lockenv

clean:
	rm -rf build $(VENV) var .mypy_cache .ruff_cache .pytest_cache

# Wire compatibility: our protos against those of BUF_AGAINST (default: the previous commit).
BUF_AGAINST ?= HEAD~1
breaking: gen
	@if ! git cat-file -e "$(BUF_AGAINST):protos" 2>/dev/null; then \
		echo "buf breaking: $(BUF_AGAINST) has no protos/, nothing to compare"; exit 0; fi
	rm -rf build/against && mkdir -p build/against
	git archive "$(BUF_AGAINST)" protos | tar -x -C build/against
	$(PY) protos/codegen.py --protos build/against/protos --image-only build/against/image.binpb
	$(BIN)/buf breaking build/protos.binpb --against build/against/image.binpb --path agentic
