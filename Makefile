# Two commands for a newcomer: `make demo` and `make test`.
# Both (re)create .venv from requirements.txt when it is missing or older than requirements.txt/setup.cfg.
# The tested interpreter is Python 3.12 (requirements.txt). PYTHON=/path/to/python3.12 overrides the search
# (tools/find_python.sh: a python3.12 on PATH that runs, then pyenv's newest 3.12.x, then /usr/bin).
PY_VERSION := 3.12
PYTHON ?= $(shell tools/find_python.sh $(PY_VERSION))
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: venv test test-fast demo bench clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "make: no Python $(PY_VERSION) found (neither python$(PY_VERSION) on PATH nor pyenv's versions/$(PY_VERSION).*): install it (e.g. 'pyenv install $(PY_VERSION)' or your system's python$(PY_VERSION) package), or run make PYTHON=/path/to/python$(PY_VERSION)" >&2; exit 2; fi
	@$(PYTHON) -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "$(PY_VERSION)" else "make: $(PYTHON) is Python " + v + "; the pinned set (requirements.txt) is for Python $(PY_VERSION): run make PYTHON=/path/to/python$(PY_VERSION)")'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	$(VPY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Two workers, one test file each at a time (--dist loadfile keeps a file's module fixtures in one worker):
# much of the suite is single-threaded XLA compilation; two workers took 24 min where one took about 29.
test: $(STAMP)
	$(VPY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

test-fast: $(STAMP)
	$(VPY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests

demo: $(STAMP)
	$(VPY) -m experiments.demo --workdir $(DEMO_DIR)

bench: $(STAMP)
	$(VPY) -m experiments.bench.topology_update

clean:
	rm -rf $(VENV) runs
