# Two commands for a newcomer: `make demo` and `make test`.
# Both (re)create .venv from requirements.txt when it is missing or older than requirements.txt/setup.cfg.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: venv test test-fast demo bench clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
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
