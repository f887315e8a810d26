"""Streaming ingest: Kafka topic -> HDFS landing zone (exactly once) + speed views.

Usage (what the `weblogs_ingest` DAG runs; `lambdaflow ingest` runs the same job in-process)::

    spark-submit --master 'local[2]' --jars <.cache/jars/spark/*.jar> spark_jobs/stream_ingest.py \
        [--available-now] [--trigger-interval '1 second'] [--max-offsets-per-trigger N] [--lg-config-k 12]

Addresses, topic and paths come from the environment (KAFKA_BOOTSTRAP, HDFS_URL, LAMBDAFLOW_TOPIC,
LAMBDAFLOW_ROOT; see lambdaflow/config.py). Stop it cleanly with SIGTERM to the driver or with
`lambdaflow ingest --stop` (a marker in HDFS polled between batches). The logic is in lambdaflow/ingest.py.
"""

import sys

from lambdaflow.ingest import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
