"""``dmp-faust``: the one command users type.

    dmp-faust worker [faust worker options]   run a worker (a Faust worker)
    dmp-faust kafka start|stop|status          the local single-node broker
    dmp-faust generate [options]               synthetic events onto the raw topic
    dmp-faust demo                             broker, worker and generator together
    dmp-faust dlq replay [options]             dead letters back into the raw topic

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
    print(f"dmp-faust: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
