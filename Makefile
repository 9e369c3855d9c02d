# Coffer — the commands the README names. Everything installs into .venv.
# Python 3.12 or 3.11, whichever is there (PYTHON=... to choose); the venv is made anew
# when the interpreter's version changes.
PYTHON ?= $(shell .ci/find-python 3.12 || .ci/find-python 3.11)
PYVER  := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(PYVER)

export PYTHONPATH := $(CURDIR)

.PHONY: run run-distributed test test-long peers test-unit docs lint bench fuzz chaos chaos-short backup-drill clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -n "$(PYVER)" || { echo "need Python 3.11 or 3.12 (found none; set PYTHON=...)"; exit 1; }
	@test -f $(STAMP) || test ! -e $(VENV) || { echo "$(VENV) is another Python's: making it anew"; rm -rf $(VENV); }
	@test -x $(PY) || { echo "creating $(VENV) with Python $(PYVER) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "installing Coffer and its dependencies into $(VENV) ..."
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[embedded,test]' -e ./clients/python
	@touch $(STAMP)

## make run: the whole platform in one process (embedded PostgreSQL unless COFFER_DATABASE_URL is set);
## request logs are off unless COFFER_LOG_LEVEL=info, so the banner stays on screen
run: $(STAMP)
	COFFER_LOG_LEVEL=$${COFFER_LOG_LEVEL:-warning} $(PY) -m services.embedded

## make run-distributed: one process per service on RabbitMQ + PostgreSQL
run-distributed: $(STAMP)
	COFFER_AMQP_URL=$${COFFER_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/} \
	COFFER_DATABASE_URL=$${COFFER_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/coffer} \
	$(PY) -m services.distributed

# a Debian package's command, installed when missing: $(call need,command,package,why)
need = @command -v $(1) >/dev/null || { echo "installing $(2) ($(3), Debian package) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq $(2) >/dev/null 2>&1 || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(2) >/dev/null; }; }

## make test: unit + integration + e2e against the real RabbitMQ and PostgreSQL on 127.0.0.1
## (and, for the lease service, Redis, RabbitMQ's management API and a password-auth PostgreSQL cluster)
## Long suites (marked `long`: the benchmarks' smoke runs, launcher installations, broker restarts) are
## make test-long's, run once by CI, so that make test stays under its 15 minutes per Python
test: $(STAMP) peers
	.ci/lease-targets
	$(PY) -m pytest tests -m "not long"

## make test-long: the long suites alone (CI runs them once, on Python 3.12)
test-long: $(STAMP) peers
	.ci/lease-targets
	$(PY) -m pytest tests -m long

## make peers: the Debian packages the tests talk to (installed when missing)
peers:
	$(call need,openssl,openssl,the relying party of the PKI tests)
	$(call need,age,age,opens the bundles of the export tests)
	$(call need,curl,curl,to wait for RabbitMQ's management API)
	$(call need,redis-server,redis-server,a target of the lease tests)
	$(call need,pebble,pebble,the ACME CA of the ACME tests)
	$(call need,named,bind9,the RFC 2136 DNS server of the ACME tests)
	$(call need,dig,bind9-dnsutils,to look at the ACME tests' TXT records)
	$(call need,softhsm2-util,softhsm2,the HSM of the pkcs11 seal tests)
	$(call need,wrk,wrk,the load generator of the benchmark's smoke test)
	$(call need,promtool,prometheus,checks and tests the alert rules in deploy/prometheus)
	@command -v npm >/dev/null || { echo "need node and npm: the SSO tests run node's oidc-provider (tests/oidc)"; exit 1; }
	@test -d tests/oidc/node_modules/oidc-provider || { echo "installing the test OpenID provider (npm ci --prefix tests/oidc) ..."; npm ci --no-audit --no-fund --prefix tests/oidc; }

## make fuzz: the whole API under schemathesis (every check but 405, stateful, seed 7, >= 10,000 cases)
fuzz: $(STAMP)
	$(PY) -m tests.fuzz $(FUZZ_ARGS)

## make chaos: faults under load against the distributed mode (kill -9 of each process, RabbitMQ and
## PostgreSQL restarts, a gateway of two killed; then combined), three rounds, a table per fault.
## It starts a RabbitMQ node and a PostgreSQL cluster of its own on other ports (needs root or sudo).
chaos: $(STAMP)
	$(PY) -m tests.chaos $(CHAOS_ARGS)

## make backup-drill: a platform started, a known set written across every service, a backup taken while
## writes go on (python -m services.admin backup), a tenant deleted, the backup restored into a fresh
## database and data directory and checked, then read back through a platform started on it (tests/drill).
## The embedded mode by default; DRILL_ARGS=--mode distributed for the processes on RabbitMQ + PostgreSQL
backup-drill: $(STAMP)
	$(PY) -m tests.drill $(DRILL_ARGS)

## make chaos-short: one round of each fault (what CI runs), a few minutes
chaos-short: $(STAMP)
	$(PY) -m tests.chaos --short $(CHAOS_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

## make docs: regenerate docs/error-codes.md and the Python client's error classes from shared/errors
docs: $(STAMP)
	$(PY) -m shared.errors > docs/error-codes.md
	$(PY) -m shared.errors --client clients/python/coffer_client

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy
	$(VENV)/bin/ruff check shared services tests bench clients/python
	$(VENV)/bin/mypy shared

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

## make bench: secrets, tokens, PKI and lease throughput and latency, embedded and distributed (see bench/run.py)
bench: $(STAMP)
	$(call need,wrk,wrk,the load generator)
	$(call need,pebble,pebble,the ACME CA of the ACME scenario)
	$(call need,named,bind9,the DNS server of the ACME scenario)
	$(call need,curl,curl,to wait for RabbitMQ's management API)
	$(call need,redis-server,redis-server,a target of the lease service)
	$(call need,softhsm2-util,softhsm2,the HSM of the pkcs11 seal rows)
	.ci/lease-targets
	$(PY) -m bench.run $(BENCH_ARGS)
