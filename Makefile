# Every target sets itself up: a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo venv tools bench-tools clean bench bench-quick

# Subprocesses (the CLI, the demo, the examples) are measured too: the .pth
# file installed below starts coverage in every Python process that finds
# COVERAGE_PROCESS_START set, and COVERAGE_FILE puts all data in one place.
test: $(STAMP) tools
	$(PY) -m coverage erase
	COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml COVERAGE_FILE=$(CURDIR)/.coverage \
		$(PY) -m coverage run -m pytest $(PYTEST_ARGS)
	COVERAGE_FILE=$(CURDIR)/.coverage $(PY) -m coverage combine -q
	COVERAGE_FILE=$(CURDIR)/.coverage $(PY) -m coverage report

demo: $(STAMP)
	$(PY) -m reactor demo

venv: $(STAMP)

# Benchmarks (docs/benchmarks.md): every system in every scenario, pinned,
# medians of 5 runs, contended runs re-run; about 13 minutes (up to about 22
# on a busy machine).  bench-quick: one short run each, one to four minutes.
# Both end with instructions and Python calls per message (callgrind,
# cProfile).  Not part of `make test`.
bench: $(STAMP) bench-tools
	$(PY) -m bench

bench-quick: $(STAMP) bench-tools
	$(PY) -m bench --quick

# valgrind, for the benchmarks' instruction counts, and for the TLS scenarios
# the openssl command (a certificate per run) and OpenSSL's headers (libssl-dev:
# the load generator's TLS build), installed from Debian's packages when
# missing (as `tools` does for the tests).  If that is impossible the bench
# says so in one line and skips what needs them: the instruction counts
# (it counts Python calls only), the TLS scenarios.
bench-tools:
	$(call apt_install,valgrind openssl /usr/include/openssl/ssl.h,valgrind openssl libssl-dev,the bench will skip its instruction counts or its TLS scenarios)

# Independent clients the tests talk to (socat for every family, redis-cli
# and redis-benchmark for the RESP example, openssl to make the TLS tests'
# throw-away certificates and as a TLS client (s_client), curl as an HTTPS
# client, haproxy as a real PROXY protocol sender and load balancer), and
# systemd-socket-activate (from systemd) to start the serve command by
# socket activation, installed from Debian's packages when missing (systemd
# on its own: a machine that has it is not upgraded for the others), and
# chromium, the headless browser that loads the dashboard's page (on its own
# too: it is large).  If that is impossible the tests that need them skip,
# saying so.
tools:
	$(call apt_install,socat redis-cli redis-benchmark openssl curl haproxy,socat redis-tools openssl curl haproxy,the tests that need them will skip)
	$(call apt_install,systemd-socket-activate,systemd,the socket activation tests will skip)
	$(call apt_install,chromium,chromium,the dashboard's browser tests will skip)

# $(call apt_install,COMMANDS,PACKAGES,WITHOUT): unless every one of COMMANDS
# is on the PATH (a word with a slash: a file that must exist, such as a
# header), install PACKAGES with apt-get (after an update if the first try
# fails); if that is impossible, say so and what happens WITHOUT them.
define apt_install
	@if $(foreach c,$(1),$(if $(findstring /,$(c)),[ -e $(c) ],command -v $(c) >/dev/null) &&) true; then \
		exit 0; \
	fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	if command -v apt-get >/dev/null; then \
		( $$SUDO apt-get install -y -q $(2) >/dev/null 2>&1 \
		  || { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q $(2) >/dev/null 2>&1; } ) \
		|| echo "make $@: could not install $(2); $(3)"; \
	else \
		echo "make $@: no apt-get here; $(3)"; \
	fi
endef

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	echo 'import coverage; coverage.process_startup()' > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/reactor-subprocess-coverage.pth"
	touch $(STAMP)

clean:
	rm -rf $(VENV) .coverage .coverage.* .pytest_cache *.egg-info
