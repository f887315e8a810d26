"""The `lambdaflow` command: local stack control and every job of the pipeline.

Each subcommand's module provides ``add_arguments(parser)`` and ``run(args) -> int``; only the
module of the command being run is imported, so ``lambdaflow status`` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("lambdaflow.cli", "start the local deployment (Kafka, HDFS, PostgreSQL, Airflow); a no-op when up"),
    "down": ("lambdaflow.cli", "stop everything `up` started (and the streaming ingest)"),
    "status": ("lambdaflow.cli", "which services are up, Airflow login, last DAG runs"),
    "kafka-tool": ("lambdaflow.cli", "run one of Kafka's own tools (consumer-groups, console-consumer, ...)"),
    "airflow": ("lambdaflow.cli", "run the `airflow` CLI against this deployment's configuration"),
    "db-shell": ("lambdaflow.cli", "psql on Airflow's metadata DB (PostgreSQL), e.g. db-shell -c 'SELECT ...'"),
    "produce": ("lambdaflow.producer", "produce clickstream events to Kafka"),
    "ingest": ("lambdaflow.ingest", "run the streaming ingest Kafka -> HDFS landing zone (spark-submit)"),
    "lag": ("lambdaflow.lag", "offset lag of the ingest, per partition, in records and seconds"),
    "batch": ("lambdaflow.batch", "recompute batch views for hours of the landing zone"),
    "query": ("lambdaflow.serving", "the serving query: batch views merged with speed views"),
    "quarantine": ("lambdaflow.storage.quarantine",
                   "list quarantined records by reason; replay them through today's parser (those that pass land once)"),
    "demo": ("lambdaflow.demo", "the whole pipeline end to end through Airflow"),
    "maintenance": ("lambdaflow.maintenance", "roll-ups, retention, hour merges and clean-up of leftovers"),
    "chaos": ("lambdaflow.chaos", "scripted faults on the cluster topology while events flow, each fully accounted"),
}


def _add_stack_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name in ("up", "down", "status"):
        from lambdaflow.stack.topology import ALIASES, TOPOLOGIES

        parser.add_argument("--topology", choices=[*TOPOLOGIES, *ALIASES], help={
            "up": "local (default) or cluster (3 brokers, 2 DataNodes, Spark master + 2 workers); "
                  "remembered in .run/topology for later commands (env LAMBDAFLOW_TOPOLOGY wins)",
            "down": "stop only this topology's processes (default: every topology's)",
            "status": "this topology (default: env LAMBDAFLOW_TOPOLOGY, else the one `up` chose)"}[name])
    if name in ("up", "down"):
        parser.add_argument("--services", nargs="+", help="only these services (default: all)")
    elif name == "status":
        parser.add_argument("--json", action="store_true", help="print one JSON document")
    elif name in ("kafka-tool", "airflow", "db-shell"):
        if name == "kafka-tool":
            from lambdaflow.stack.services import KAFKA_TOOLS

            parser.add_argument("tool", choices=sorted(KAFKA_TOOLS))
        parser.add_argument("args", nargs=argparse.REMAINDER)


def _run_stack(args: argparse.Namespace) -> int:
    from lambdaflow import stack

    if args.command in ("up", "down", "status"):
        from lambdaflow.stack import cluster

        code = cluster.run_command(args)  # the cluster topology's part; None: the local stack's turn
        if code is not None:
            return code
    if args.command == "up":
        stack.up(services=args.services)
        document = stack.status()
        down = [n for n, s in document["services"].items() if s != "up" and (not args.services or n in args.services)]
        print(f"[up] services: {', '.join(f'{n}={s}' for n, s in document['services'].items())}")
        if not args.services or any(s.startswith("airflow") for s in args.services):
            from lambdaflow.stack.services import admin_password

            print(f"[up] Airflow UI: {document['airflow']['url']}  user: {document['airflow']['username']}  "
                  f"password: {admin_password()}  (stored in {document['airflow']['password_file']})")
            print(f"[up] dashboard: {document['airflow']['url']}/lambdaflow/")
        return 1 if down else 0
    if args.command == "down":
        stack.down(services=args.services)
        return 0
    if args.command == "status":
        document = stack.status()
        if args.json:
            print(json.dumps(document, indent=2))
        else:
            for name, state in document["services"].items():
                print(f"{name:24} {state}")
            print(f"airflow: {document['airflow']['url']} (user {document['airflow']['username']}, "
                  f"password in {document['airflow']['password_file']}; metadata DB "
                  f"{document['airflow']['metadata_db']})")
            ingest = document["ingest"]
            print(f"streaming ingest: {ingest['state']}" + (f" (pid {ingest['pid']}, log {ingest['log']})"
                                                             if ingest["pid"] else ""))
            for dag_id, info in document["dags"].items():
                print(f"dag {dag_id:28} last run: {info['last_run_state']}")
        return 0 if all(s == "up" for s in document["services"].values()) else 3
    if args.command == "kafka-tool":
        tool_args = args.args[1:] if args.args[:1] == ["--"] else args.args
        return subprocess.call(stack.kafka_tool_command(args.tool, tool_args))
    if args.command == "db-shell":
        from lambdaflow.stack.services import airflow_db_url, postgres_bin_dir, uses_own_postgres

        if not uses_own_postgres():
            raise SystemExit("db-shell: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN points at your own database; "
                             "use `lambdaflow airflow db shell`")
        stack.up(services=["postgres"], quiet=True)
        psql_args = args.args[1:] if args.args[:1] == ["--"] else args.args
        return subprocess.call([str(postgres_bin_dir() / "psql"), airflow_db_url(driver=None), *psql_args])
    if args.command == "airflow":
        from lambdaflow.stack.services import airflow_command

        stack.ensure_migrated()
        env = {**os.environ, **stack.airflow_env()}
        return subprocess.call(airflow_command(*args.args), env=env)
    raise AssertionError(args.command)


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lambdaflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        if name != selected:
            continue
        if module_name == __name__:
            _add_stack_arguments(name, child)
        else:
            importlib.import_module(module_name).add_arguments(child)
    return parser


# Commands that address one deployment's services besides `up`, `down` and `status`
_DEPLOYMENT_COMMANDS = {"kafka-tool", "airflow", "db-shell"}


def _enter_cluster_environment(argv: list[str]) -> None:
    """A job command addressing the cluster topology runs in the cluster's environment (its run
    directory, Airflow, PostgreSQL and Spark Connect ports: lambdaflow.stack.cluster.environment):
    this process is replaced by the same command in it."""
    from lambdaflow.config import topology_name

    if topology_name() != "cluster":
        return
    from lambdaflow.stack import cluster

    if cluster.in_environment():
        return
    # not `-m lambdaflow.cli`: this module would run as __main__ and miss its own commands
    os.execve(sys.executable, [sys.executable, "-c", "import sys; from lambdaflow.cli import main; sys.exit(main())",
                               *argv], cluster.environment())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected in _DEPLOYMENT_COMMANDS or (selected in COMMANDS and COMMANDS[selected][0] != __name__):
        _enter_cluster_environment(argv)
    if argv[:1] == ["db-shell"] and argv[1:2] not in (["-h"], ["--help"]):  # psql's own options pass through
        return _run_stack(argparse.Namespace(command="db-shell", args=argv[1:]))
    args = build_parser(selected if selected in COMMANDS else None).parse_args(argv)
    module_name = COMMANDS[args.command][0]
    if module_name != __name__:  # jobs follow the topology `up --topology` chose (lambdaflow.spark reads the env)
        from lambdaflow.config import topology_name

        os.environ.setdefault("LAMBDAFLOW_TOPOLOGY", topology_name())
    try:
        if module_name == __name__:
            return _run_stack(args)
        return int(importlib.import_module(module_name).run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # errors a user can act on are printed without a stack trace
        from lambdaflow.errors import is_user_error

        if not is_user_error(exc):
            raise
        print(f"lambdaflow {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
