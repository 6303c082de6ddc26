# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-faults bench install run-worker run-bot clean locales

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@touch $(STAMP)

install: $(STAMP)

## Bring up the whole stack on embedded defaults and push one generation through it.
demo: $(STAMP)
	$(PY) -m tests.demo

## Every test, on a real Temporal dev server, a real Postgres and the real aiogram client. The fault
## matrix runs every cell in both delivery modes with N=10 here (make test-faults: N=20).
test: $(STAMP)
	FAULTS_N=$${FAULTS_N:-10} $(PY) -m pytest -q

## Everything except the slow end-to-end suites.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e"

## The fault matrix only (issue #3): every race and fault, N generations each, in both delivery modes
## (FAULTS_MODES=send,edit); see docs/reliability.md.
test-faults: $(STAMP)
	$(PY) -m pytest -q -m faults

## Compile the catalogues (imagegen/locales/*/LC_MESSAGES/messages.po → .mo; the .mo files are committed).
locales: $(STAMP)
	$(VENV)/bin/pybabel compile -d imagegen/locales -D messages

## The benchmark (issue #9): the whole stack measured against the bare-Temporal floor; writes docs/performance.md.
bench: $(STAMP)
	$(PY) -m tests.bench

run-worker: $(STAMP)
	$(PY) worker.py

run-bot: $(STAMP)
	$(PY) bot.py

clean:
	rm -rf $(VENV) .run .pytest_cache
