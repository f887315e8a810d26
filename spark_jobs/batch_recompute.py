"""Batch layer job: recompute the exact batch views for hours of the landing zone.

Usage (the ``weblogs_batch`` DAG submits it through SparkSubmitOperator; ``lambdaflow batch`` runs the
same code in-process)::

    spark-submit --jars <Kafka connector jars> spark_jobs/batch_recompute.py --hour 2026-11-24T10:00:00Z
    spark-submit ... spark_jobs/batch_recompute.py --from 2026-11-24T10:00:00Z --to 2026-11-24T13:00:00Z \\
        [--no-late] [--compact]
    spark-submit ... spark_jobs/batch_recompute.py --all [--compact]

Intervals are half-open, [from, to), in UTC. Addresses and paths come from the environment
(``HDFS_URL``, ``LAMBDAFLOW_ROOT``, ``LAMBDAFLOW_TOPIC``; see ``lambdaflow.config``). The work is done
by ``lambdaflow.batch.execute``; see ``lambdaflow.batch`` for the layout and the rules.
"""

from __future__ import annotations

import argparse
import sys

from lambdaflow import batch
from lambdaflow.config import Settings
from lambdaflow.spark import session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batch_recompute.py", description=__doc__.splitlines()[0])
    batch.add_arguments(parser)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    spark = session("lambdaflow-batch-recompute", settings)
    try:
        records = batch.execute(spark, settings, args)
    finally:
        spark.stop()
    print(f"[batch] done: {len(records)} hour(s) recomputed, "
          f"{sum(r['landed_rows'] for r in records)} landed rows", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
