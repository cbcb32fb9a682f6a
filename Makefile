# Microservices Lab. Quick start: `make up` (the sandbox), `make test` (every test).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed

.PHONY: up down status test test-fast bench chaos load lab notebooks notebook-mutants compose compose-test venv clean

up: $(STAMP)                 ## start the sandbox in the foreground (Ctrl-C stops it)
	$(PY) -m microlab up $(ARGS)

down: $(STAMP)               ## stop a sandbox started elsewhere
	$(PY) -m microlab down

status: $(STAMP)             ## table of services, health, uptime, memory
	$(PY) -m microlab status

test: $(STAMP)               ## every test: unit, contract, whole-sandbox integration
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)          ## unit tests only
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

bench: $(STAMP)              ## benchmarks (loopback only); numbers go to reports/*.md
	$(PY) -m bench.proxy_bench --out reports/bench-proxy.md
	$(PY) -m bench.storage_bench --report reports/bench-storage.md
	$(PY) -m bench.sandbox_bench --out reports/bench-sandbox.md
	cat reports/bench-sandbox.md reports/bench-proxy.md reports/bench-storage.md > reports/bench.md
	@echo "all numbers, with the machine they ran on: reports/bench.md"

EXP ?= payments-outage
chaos: $(STAMP)              ## one chaos experiment, EXP=name (chaos/*.json); verdict in reports/chaos/
	$(PY) -m chaos.runner $(EXP)

load: $(STAMP)               ## a load scenario (SCENARIO=breaker|retries|saga, ARGS=--short)
	$(PY) -m loadtests.run $(SCENARIO) $(ARGS)

lab: $(STAMP)                ## JupyterLab on 127.0.0.1 against the sandbox (started if none runs)
	$(PY) -m microlab.jupyter $(ARGS)

notebooks: $(STAMP)          ## run every notebook headless on a sandbox of its own (NB="03 07")
	$(PY) -m microlab.notebooks $(NB) $(ARGS)

notebook-mutants: $(STAMP)   ## break a pattern, see the notebook teaching it fail
	$(PY) -m tests.notebooks.mutants $(ARGS)

compose: $(STAMP)            ## regenerate docker-compose.yml and compose/toxiproxy.json from the topology
	$(PY) -m microlab.compose

compose-test: $(STAMP)       ## the real compose file up under Podman (root), used and broken, then down
	$(PY) -m tests.compose.stack $(ARGS)

venv: $(STAMP)

# The venv is (re)built whenever requirements.txt changes.
$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

clean:                       ## remove the venv and the sandbox's state, logs and data
	rm -rf $(VENV) .microlab
