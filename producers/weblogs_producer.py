"""Clickstream load generator: the same as ``lambdaflow produce``, as a standalone script.

Usage::

    .venv/bin/python producers/weblogs_producer.py --count 100000 --rate 0 --seed 7
    .venv/bin/python producers/weblogs_producer.py --duration 60 --rate 500 --bad-fraction 0.05

Options and behaviour: ``lambdaflow.producer`` (``--help``).
"""

from __future__ import annotations

import argparse
import sys

from lambdaflow import producer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weblogs_producer", description=__doc__.splitlines()[0])
    producer.add_arguments(parser)
    return producer.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
