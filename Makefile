# Microservices Lab. Quick start: `make up` (the sandbox), `make test` (every test).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed

.PHONY: up down status test test-fast bench soak chaos load lab notebooks notebook-mutants compose compose-test manifests validate docs docs-serve dashboard dashboard-assets grade learn venv clean

up: $(STAMP)                 ## start the sandbox in the foreground (Ctrl-C stops it)
	@$(MAKE) --no-print-directory -s $(SOCKET_IO_JS) 2>/dev/null \
		|| echo "(npm is missing: the control room's live notification feed stays off)"
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
	$(PY) -m bench.floor_bench --sandbox reports/bench-sandbox.json --out reports/bench-floor.md
	cat reports/bench-sandbox.md reports/bench-floor.md reports/bench-proxy.md reports/bench-storage.md > reports/bench.md
	@echo "all numbers, with the machine they ran on: reports/bench.md"

# The soak: 10 min, memory judged from minute 2; SHORT=1 is CI's 3 min, memory only reported
# (three minutes are mostly warm-up and the high-water marks of the first faults).
soak: $(STAMP)               ## 8 clients, a fault every 20 s, then check + memory (SHORT=1: 3 min)
	$(PY) -m bench.soak $(if $(SHORT),--minutes 3 --judge-from 1 --memory report --out reports/soak-short.md) $(ARGS)

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

grade: $(STAMP)              ## grade the exercises (EX=breaker, SOLUTION=path, SEED=n, LIVE=1)
	@$(PY) -m exercises.grading $(EX) $(if $(SOLUTION),--solution $(SOLUTION)) \
		$(if $(SEED),--seed $(SEED)) $(if $(LIVE),--live)

learn: $(STAMP)              ## the guided loop: edit exercises/<name>/starter.py, regraded on save
	@$(PY) -m exercises.grading.learn $(ARGS)

compose: $(STAMP)            ## regenerate docker-compose.yml and compose/toxiproxy.json from the topology
	$(PY) -m microlab.compose

manifests: $(STAMP)          ## regenerate k8s/ and istio/ from the topology (overlays' kustomization.yaml are hand-written)
	$(PY) -m microlab.k8s

validate: $(STAMP)           ## k8s/ and istio/: regenerated? rendered, strict schemas, drift, policy (offline)
	$(PY) -m microlab.validate
	$(PY) -m microlab.k8s --check
	$(VENV)/bin/yamllint --strict -c .yamllint.yaml k8s istio

compose-test: $(STAMP)       ## the real compose file up under Podman (root), used and broken, then down
	$(PY) -m tests.compose.stack $(ARGS)

# The lesson's site. Mermaid (the diagrams) comes from npm, vendored here so pages render offline.
MERMAID_VERSION := 11.17.2
MERMAID_JS      := build/vendor/mermaid-$(MERMAID_VERSION).min.js

docs: $(STAMP) $(MERMAID_JS) ## the lesson as a website in build/site (strict: a broken link fails)
	$(PY) -m microlab.apidocs build/api
	MERMAID_JS=$(MERMAID_JS) $(PY) -m mkdocs build --strict

docs-serve: $(STAMP) $(MERMAID_JS) ## the lesson's site on http://127.0.0.1:8000, rebuilt on save
	$(PY) -m microlab.apidocs build/api
	MERMAID_JS=$(MERMAID_JS) $(PY) -m mkdocs serve --strict --dev-addr 127.0.0.1:8000

$(MERMAID_JS):
	rm -rf build/vendor/npm && mkdir -p build/vendor/npm
	cd build/vendor/npm && npm pack --silent mermaid@$(MERMAID_VERSION) >/dev/null
	tar -xzf build/vendor/npm/mermaid-$(MERMAID_VERSION).tgz -C build/vendor/npm package/dist/mermaid.min.js
	mv build/vendor/npm/package/dist/mermaid.min.js $@
	rm -rf build/vendor/npm

# The control room. Its one JavaScript library, the Socket.IO client, comes from npm (once).
SOCKET_IO_VERSION := 4.8.1
SOCKET_IO_JS      := build/vendor/socket.io-client-$(SOCKET_IO_VERSION).min.js

dashboard: $(STAMP) $(SOCKET_IO_JS) ## the control room of the running sandbox, on http://127.0.0.1:8488
	SOCKET_IO_JS=$(SOCKET_IO_JS) $(PY) -m microlab.dashboard $(ARGS)

dashboard-assets: $(SOCKET_IO_JS) ## fetch the dashboard's Socket.IO client from npm (the browser tests need it)

$(SOCKET_IO_JS):
	rm -rf build/vendor/npm-sio && mkdir -p build/vendor/npm-sio
	cd build/vendor/npm-sio && npm pack --silent socket.io-client@$(SOCKET_IO_VERSION) >/dev/null
	tar -xzf build/vendor/npm-sio/socket.io-client-$(SOCKET_IO_VERSION).tgz -C build/vendor/npm-sio package/dist/socket.io.min.js
	mv build/vendor/npm-sio/package/dist/socket.io.min.js $@
	rm -rf build/vendor/npm-sio

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
