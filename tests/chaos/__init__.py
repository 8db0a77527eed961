"""``make chaos`` (``python -m tests.chaos``): kills, a lost worker, a paused worker, a
broker restart and erasures under load, then every table compared with an
independent count.

Modules: :mod:`.load` (the seeded load), :mod:`.model` (the expectation, computed
without the project's code), :mod:`.erasures` (which users are erased, when, and
the answers), :mod:`.cluster` (broker, worker processes, metrics scraper),
:mod:`.harness` (the phases), :mod:`.observe` (Kafka and HTTP reads),
:mod:`.compare` (the checks) and :mod:`.report` (tables and the final line).
Settings (environment): ``CHAOS_EVENTS`` (200000), ``CHAOS_KILLS`` (5),
``CHAOS_SEED``, ``CHAOS_PHASES`` (``abcp``: kills, a worker lost, the broker
restarted, a worker paused; b, c, p in the order given), ``CHAOS_ERASURES`` (1; 0: none),
``CHAOS_GUARANTEE`` (``at_least_once``, ``exactly_once`` or ``both``, the
default), ``CHAOS_RESULTS`` (the results file, default
``docs/chaos-results.md``; empty: none). What is promised and how it is tested:
``docs/RELIABILITY.md``.
"""
