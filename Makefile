# Two commands work on a fresh machine: `make run` and `make test`.
# Both create .venv, install the Python package with its test extras, and install the
# Debian packages the demo and the tests start for real (redis-server, dig) if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYS_PKGS := redis-server redis-tools bind9-dnsutils

.PHONY: run test lint bench bench-deps sysdeps venv clean

$(STAMP): pyproject.toml
	flock .venv.lock bash deploy/make-venv.sh $(PYTHON) $(VENV)

venv: $(STAMP)

# Debian packages: installed only when their binaries are missing (needs root or sudo).
sysdeps:
	@bash deploy/install-system-deps.sh redis-server:redis-server redis-cli:redis-tools dig:bind9-dnsutils chromium:chromium chromedriver:chromium-driver

run: $(STAMP) sysdeps
	$(PY) -m deploy.launcher

test: $(STAMP) sysdeps lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check gslb regional_lb tests bench deploy geo_data
	$(VENV)/bin/mypy --strict gslb regional_lb
	$(VENV)/bin/lint-imports --no-cache

bench-deps:
	@bash deploy/install-system-deps.sh dnsperf:dnsperf gdnsd:gdnsd haproxy:haproxy wrk:wrk

bench: $(STAMP) bench-deps
	$(PY) bench/dns_bench.py
	$(PY) bench/dns_attack.py
	$(PY) bench/dns_fuzz.py
	$(PY) bench/dns_memory.py
	$(PY) bench/http_bench.py
	$(PY) bench/http_workers.py
	$(PY) bench/dns_workers.py
	$(PY) bench/hash_distribution.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
