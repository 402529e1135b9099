# attnlab: every target bootstraps .venv itself (pinned by requirements.lock).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attnlab-installed
LAB_STAMP := $(VENV)/.attnlab-lab-installed
# pip compiles every installed module on one core; compileall does it on every core, skipping the packages'
# own tests and transformers' models other than those imported (they compile when imported): 153 -> 120 s
NO_BYTECODE := /tests?/|/transformers/models/(?!(auto|llama)/)
PROFILE ?= auto
JOBS ?= 1
TORCH ?= torch==2.13.0
ARGS ?=

.PHONY: reproduce test lab lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q --no-compile -c requirements.lock "$(TORCH)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q --no-compile -c requirements.lock -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m compileall -qq -j 0 -x '$(NO_BYTECODE)' $(VENV)/lib || true
	$(PY) -c "import attnlab, torch, papermill, nbval" && touch $(STAMP)

$(LAB_STAMP): $(STAMP)
	$(PY) -m pip install -q -c requirements.lock -e '.[dev,lab]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import jupyterlab" && touch $(LAB_STAMP)

reproduce: $(STAMP)
	$(VENV)/bin/attnlab run --profile $(PROFILE) --jobs $(JOBS) $(ARGS)

TEST_WORKERS ?= 2

test: $(STAMP)
	ATTNLAB_AUTO_PROFILE=smoke $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(ARGS)

lab: $(LAB_STAMP)
	$(PY) -m ipykernel install --sys-prefix --name attnlab --display-name "attnlab (.venv)" >/dev/null
	$(VENV)/bin/jupyter lab notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs/interactive outputs/run-* outputs/latest
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
