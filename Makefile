# Every target sets itself up: a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo venv clean

# Subprocesses (the CLI, the demo, the examples) are measured too: the .pth
# file installed below starts coverage in every Python process that finds
# COVERAGE_PROCESS_START set, and COVERAGE_FILE puts all data in one place.
test: $(STAMP)
	$(PY) -m coverage erase
	COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml COVERAGE_FILE=$(CURDIR)/.coverage \
		$(PY) -m coverage run -m pytest $(PYTEST_ARGS)
	COVERAGE_FILE=$(CURDIR)/.coverage $(PY) -m coverage combine -q
	COVERAGE_FILE=$(CURDIR)/.coverage $(PY) -m coverage report

demo: $(STAMP)
	$(PY) -m reactor demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	echo 'import coverage; coverage.process_startup()' > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/reactor-subprocess-coverage.pth"
	touch $(STAMP)

clean:
	rm -rf $(VENV) .coverage .coverage.* .pytest_cache *.egg-info
