"""``python -m lambdaflow.stack up|down NAME...``: start or stop services of the local stack's kind in
this process's environment, with nothing else of ``lambdaflow up`` (no topology routing). The cluster
runs its Spark Connect server, PostgreSQL and Airflow daemons this way, in its own environment
(``lambdaflow.stack.cluster.environment``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lambdaflow.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("services", nargs="+")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    from lambdaflow import stack

    try:
        if args.command == "up":
            stack.up(services=args.services, quiet=args.quiet)
        else:
            stack.down(services=args.services, quiet=args.quiet)
    except stack.ServiceError as exc:
        print(f"[{args.command}] {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
