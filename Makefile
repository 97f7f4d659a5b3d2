# Two commands on a fresh Debian/Ubuntu machine:  make run  (the app)  and  make test  (the suite).
# Both are idempotent: the venv is reused and requirements are reinstalled only when they change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
PORT ?= 8501

.PHONY: run test test-fast setup data bench clean-venv

run: setup data
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) --server.headless true

test: setup-dev data
	$(PY) -m pytest

test-fast: setup-dev data
	$(PY) -m pytest -m "not slow and not e2e"

setup: $(STAMPS)/requirements

setup-dev: setup $(STAMPS)/requirements-dev browser

$(PY):
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv (sudo apt-get install python3-venv)"; exit 1; }

$(STAMPS)/requirements: requirements.txt | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/requirements-dev: requirements-dev.txt | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@mkdir -p $(STAMPS) && touch $@

data: setup
	@PY=$(PY) scripts/setup-data.sh

# Browser tests use Debian's Chromium; never a downloaded browser.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  else echo "note: /usr/bin/chromium is missing (sudo apt-get install chromium); e2e tests will be skipped"; fi; \
	fi

bench: setup data
	$(PY) -m qcore.bench calibrate --out bench-results/calibrate.json

clean-venv:
	rm -rf $(VENV)
