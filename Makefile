# hostflame: the two commands of the README's Quick start, and a few more.
# Run as root (prefix sudo when not root). Every target installs what it needs, idempotently.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HOSTFLAME := $(VENV)/bin/hostflame
OUT := out
PREFIX ?= /usr/local
DESTDIR ?=
DURATION ?= 10

.PHONY: install uninstall record test deps test-deps lint unit integration bench bench-viewer check clean

# Profile the whole host for $(DURATION) s: pprof, folded stacks and an HTML flame graph.
record: deps
	@mkdir -p $(OUT)
	$(HOSTFLAME) record --duration $(DURATION) -o $(OUT)/profile.pb.gz -o $(OUT)/profile.folded -o $(OUT)/flamegraph.html

# Lint, type-check and run the whole suite, BPF integration tests included.
test: test-deps lint
	$(VENV)/bin/pytest -q

# As root: hostflame in $(PREFIX)/lib/hostflame (venv) and $(PREFIX)/bin, the systemd unit, and
# /etc/hostflame/hostflame.toml when absent. Idempotent. DESTDIR=DIR stages into another root.
install:
	@PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) packaging/install.sh install

uninstall:
	@PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) packaging/install.sh uninstall

deps:
	@packaging/dev/install-deps.sh runtime

test-deps:
	@packaging/dev/install-deps.sh test

lint: test-deps
	$(VENV)/bin/ruff check agent symbolizer bpf tests
	$(VENV)/bin/mypy

unit: test-deps
	$(VENV)/bin/pytest -q tests/unit

integration: test-deps
	$(VENV)/bin/pytest -q tests/integration

# Side-by-side measurements against peers (minutes; not part of the test suite).
bench: test-deps
	$(PY) -m tests.benchmarks.run_all

# How fast the HTML viewer draws a 200 000-node profile in headless Chromium (no root needed).
bench-viewer: test-deps
	$(PY) -m tests.benchmarks.viewer

check: deps
	$(HOSTFLAME) check

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
