# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SKY_VENV := .venv-sky
SKYPILOT_VERSION := 0.14.1
PHOENIX_VENV := .venv-phoenix
PHOENIX_VERSION := 20.26.1

.PHONY: install demo test clean browser lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels. deepspeed after it,
# from its sdist without build isolation (its build imports torch: an isolated build would fetch
# a CUDA torch) and without compiling its ops (DS_BUILD_OPS=0: they build on first use on GPUs).
DEEPSPEED := deepspeed==0.19.8
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet --no-build-isolation $(DEEPSPEED)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/peftstudio plan
	HF_HUB_OFFLINE=1 $(BIN)/peftstudio train
	HF_HUB_OFFLINE=1 $(BIN)/peftstudio generate outputs

# SkyPilot in its own venv: installing it into $(VENV) would downgrade click and uvicorn. The
# launch test loads generated tasks with its parser; without this venv that one test is skipped.
$(SKY_VENV)/.installed:
	$(PYTHON) -m venv $(SKY_VENV)
	$(SKY_VENV)/bin/pip install --quiet skypilot==$(SKYPILOT_VERSION) && touch $@ \
		|| echo "skypilot not installed: the SkyPilot parser test will be skipped"

# Arize Phoenix in its own venv (~150 packages; in $(VENV) it would add ~70 the product does not use):
# the logging=phoenix test starts `phoenix serve` from it; without this venv that test is skipped.
$(PHOENIX_VENV)/.installed:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install --quiet arize-phoenix==$(PHOENIX_VERSION) && touch $@ \
		|| echo "arize-phoenix not installed: the real-Phoenix test will be skipped"

# The studio's browser tests drive Debian's Chromium; installed here when root (a no-op once
# /usr/bin/chromium exists). Not root and no Chromium: those tests skip and say why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# The layer contract (pyproject.toml [tool.importlinter]) and pyflakes' rules fail the build
# before any test runs.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test: $(STAMP) lint browser $(SKY_VENV)/.installed $(PHOENIX_VENV)/.installed
	HF_HUB_OFFLINE=1 PEFTSTUDIO_SKY_PYTHON=$(CURDIR)/$(SKY_VENV)/bin/python \
		PEFTSTUDIO_PHOENIX_PYTHON=$(CURDIR)/$(PHOENIX_VENV)/bin/python $(BIN)/python -m pytest -q -rs --durations=25

clean:
	rm -rf $(VENV) $(SKY_VENV) $(PHOENIX_VENV) outputs checkpoints
