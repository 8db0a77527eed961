"""``dmp-faust``: the one command users type.

    dmp-faust worker [faust worker options]   run a worker (a Faust worker)
    dmp-faust kafka start|stop|status          the local single-node broker
    dmp-faust generate [options]               synthetic events onto the raw topic
    dmp-faust demo                             broker, worker and generator together
    dmp-faust dlq replay [options]             dead letters back into the raw topic
    dmp-faust sql "SELECT ..." [--format F]    SQL over the Parquet history (DuckDB)
    dmp-faust history compact                  merge the history's small files

Sub-commands import their modules lazily, so ``dmp-faust kafka start`` does
not pay for importing Faust.
"""

from __future__ import annotations

import sys

USAGE = """usage: dmp-faust COMMAND [ARGS]

commands:
  worker      run a dmp-faust worker (Faust worker options follow, see --help)
  kafka       start, stop or check the local single-node Kafka broker
  generate    produce synthetic events onto the raw topic
  demo        run the broker, a worker and the generator until Ctrl-C
  dlq         replay dead letters that pass today's validation (dlq replay --help)
  sql         run SQL over the Parquet history with DuckDB (view `events`)
  history     look after the Parquet history (history compact)
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "worker":
        from dmp_faust.worker import run_worker

        return run_worker(rest)
    if command == "kafka":
        from dmp_faust import kafka_local

        return kafka_local.main(rest)
    if command == "generate":
        from dmp_faust import generator

        return generator.main(rest)
    if command == "demo":
        from dmp_faust import demo

        return demo.main(rest)
    if command == "dlq":
        from dmp_faust import dlq

        return dlq.main(rest)
    if command == "sql":
        from dmp_faust.history.commands import sql_main

        return sql_main(rest)
    if command == "history":
        from dmp_faust.history.commands import history_main

        return history_main(rest)
    print(f"dmp-faust: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
