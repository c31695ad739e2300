# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements-dev.lock

.PHONY: install run test lint browser pango token clean messages bench bench-scale lock

# Every package at the version and with the hashes of requirements-dev.lock (pip refuses any other),
# then the project itself without resolving anything again: the same install on every machine.
# The project is built with the build backend of requirements-build.lock too (no build isolation,
# which would fetch whatever setuptools is newest).
$(STAMP): pyproject.toml $(LOCK) requirements-build.lock
	@$(MAKE) --no-print-directory pango
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --requirement $(LOCK)
	$(PY) -m pip install --quiet --require-hashes --requirement requirements-build.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $(STAMP)

install: $(STAMP)

## Temporal dev server (UI on 8233), the worker and the API on 127.0.0.1:8000; Ctrl-C stops all.
run: install
	$(VENV)/bin/reintegration run

## Lint, format and type check (ruff and mypy, configured in pyproject.toml): no findings allowed.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## The printable report (WeasyPrint) needs Pango and a font; installed with apt when missing.
pango:
	@{ ldconfig -p | grep -q 'libpangoft2-1.0.so.0' && ls /usr/share/fonts/truetype/dejavu >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; echo "Pango is missing: installing it with sudo apt-get"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core; }

## The browser tests drive Debian's Chromium; installed with apt when missing (Playwright never downloads one).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; echo "Chromium is missing: installing it with sudo apt-get"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

## The lint, then the whole suite, against a real Temporal server, SQLite and the machine's PostgreSQL.
test: lint browser
	$(PY) -m pytest $(PYTEST_ARGS)

## The message catalogues: extract the messages of the code and the templates into
## api/web/locale/messages.pot and bring each language's messages.po up to it (`reintegration i18n
## check` lists what a language still lacks, and fails while it lacks anything).
messages: install
	$(VENV)/bin/reintegration i18n update

## The benchmark (numbers, no pass or fail): journeys through the API against bare Temporal and
## a bare FastAPI app, on a stack of its own in a temporary folder; writes bench.json. Options:
## make bench BENCH_ARGS="--journeys 50 --clients 8 --seconds 5".
bench: install
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

## The orchestrator with many open cases (numbers, no pass or fail): loads 10,000 then 100,000 open
## cases on a stack of its own and measures the lists' p95, the worker's RSS, disk per case and the
## worker's restart; writes bench-scale.json. Options: make bench-scale SCALE_ARGS="--cases 10000".
bench-scale: install
	$(PY) -m benchmarks.scale $(SCALE_ARGS)

## The lock files, from pyproject.toml: requirements.lock (what the image installs),
## requirements-dev.lock (that, the development server and the tests' tools: what `make install`
## installs) and requirements-build.lock (the build backend), every package pinned with its hashes.
## Run after changing a dependency; commit all three.
## Versions already locked stay unless pyproject.toml needs others (UPGRADE=1 takes the newest).
lock:
	test -x $(VENV)/bin/uv || { test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PY) -m pip install --quiet 'uv>=0.13'; }
	$(VENV)/bin/uv pip compile --quiet pyproject.toml --universal --python-version 3.11 --generate-hashes \
	  $(if $(UPGRADE),--upgrade,) --output-file requirements.lock
	$(VENV)/bin/uv pip compile --quiet pyproject.toml --extra run --extra test --universal --python-version 3.11 \
	  --generate-hashes $(if $(UPGRADE),--upgrade,) --constraint requirements.lock --output-file $(LOCK)
	$(PY) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'], sep='\n')" \
	  | $(VENV)/bin/uv pip compile --quiet - --universal --python-version 3.11 --generate-hashes \
	  $(if $(UPGRADE),--upgrade,) --output-file requirements-build.lock

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
