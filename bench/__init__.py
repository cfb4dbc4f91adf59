"""The benchmark harness: ``python -m bench`` (``make bench``, ``make bench-quick``).

* ``bench/loadgen.c``: the load generator (its parts in ``bench/loadgen_*.c``),
  compiled at run time (``bench/build.py``), with OpenSSL for TLS;
* ``bench/tls.py``: what the TLS scenarios need (that build, a certificate per run);
* ``bench/servers.py``: every system under test, one echo server per process;
* ``bench/scenarios.py``: the scenarios and which systems can serve them;
* ``bench/run.py``: starts, pins, measures and stops each server, repeatedly;
* ``bench/noise.py``: what other processes used in each run's window, and the
  re-run policy for contended runs;
* ``bench/counts.py`` (with ``bench/profile.py``): instructions and Python
  calls per message, counted under callgrind and cProfile;
* ``bench/report.py`` and ``bench/chart.py``: the tables, the targets, the
  Markdown in ``docs/benchmarks.md`` and the chart ``docs/images/bench.svg``.

See docs/benchmarks.md.
"""
