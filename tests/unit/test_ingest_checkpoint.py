"""Which streaming-query failures mean "this checkpoint cannot be used" (then it is moved aside).

The chains below are what Spark 4.2 really raised in the ingest's set-up (Kafka source, foreachBatch),
recorded as (Java class, error condition, first Spark class in the stack): see
tests/integration/test_recovery.py for the same decisions against real checkpoints.
"""

from __future__ import annotations

import pytest

from lambdaflow.ingest import QueryFailed, StopIngest, _is_checkpoint_problem

METADATA_LOG = "org.apache.spark.sql.execution.streaming.checkpointing.HDFSMetadataLog"
STREAM_FAILED = ("org.apache.spark.sql.streaming.StreamingQueryException", "STREAM_FAILED",
                 "org.apache.spark.sql.execution.streaming.runtime.StreamExecution")

GARBAGE_OFFSET_LOG = [STREAM_FAILED,
                      ("java.lang.IllegalStateException", None, METADATA_LOG),
                      ("org.apache.spark.SparkIllegalStateException", "MALFORMED_LOG_FILE",
                       "org.apache.spark.sql.errors.QueryExecutionErrors$")]
NEWER_SPARK_LOG = [STREAM_FAILED,
                   ("java.lang.IllegalStateException", None, METADATA_LOG),
                   ("org.apache.spark.SparkIllegalStateException", "INVALID_LOG_VERSION.MAX_SUPPORTED_VERSION",
                    "org.apache.spark.sql.errors.QueryExecutionErrors$")]
OTHER_SOURCE_OFFSETS = [STREAM_FAILED,
                        ("java.lang.IllegalArgumentException", None, "org.apache.spark.sql.kafka010.JsonUtils$")]
MISSING_METADATA_FILE = [("org.apache.spark.SparkRuntimeException", "STREAMING_CHECKPOINT_MISSING_METADATA_FILE",
                          "org.apache.spark.sql.execution.streaming.StreamingErrors$")]
UNREADABLE_METADATA_FILE = [("com.fasterxml.jackson.core.JsonParseException", None,
                             "org.apache.spark.sql.execution.streaming.runtime.StreamMetadata$")]

KAFKA_METADATA_TIMEOUT = [STREAM_FAILED,
                          ("org.apache.kafka.common.errors.TimeoutException", None,
                           "org.apache.spark.sql.kafka010.KafkaOffsetReaderAdmin")]
KAFKA_NODE_TIMEOUT = [STREAM_FAILED,
                      ("java.util.concurrent.ExecutionException", None,
                       "org.apache.spark.sql.kafka010.ConsumerStrategy"),
                      ("org.apache.kafka.common.errors.TimeoutException", None, None)]
KAFKA_DATA_LOSS = [STREAM_FAILED,
                   ("org.apache.spark.sql.kafka010.KafkaIllegalStateException", "KAFKA_DATA_LOSS.PARTITIONS_DELETED",
                    "org.apache.spark.sql.kafka010.KafkaExceptions$")]
HDFS_DOWN = [STREAM_FAILED, ("java.net.ConnectException", None, METADATA_LOG)]


@pytest.mark.parametrize("chain", [GARBAGE_OFFSET_LOG, NEWER_SPARK_LOG, OTHER_SOURCE_OFFSETS, MISSING_METADATA_FILE,
                                   UNREADABLE_METADATA_FILE],
                         ids=["garbage-offset-log", "newer-spark-log", "other-source", "missing-metadata",
                              "unreadable-metadata"])
def test_an_unusable_checkpoint_is_recognised_by_its_error(chain) -> None:
    assert _is_checkpoint_problem(QueryFailed("query failed", chain))


@pytest.mark.parametrize("chain", [KAFKA_METADATA_TIMEOUT, KAFKA_NODE_TIMEOUT, KAFKA_DATA_LOSS, HDFS_DOWN],
                         ids=["kafka-metadata-timeout", "kafka-node-timeout", "kafka-data-loss", "hdfs-down"])
def test_other_failures_do_not_move_the_checkpoint_aside(chain) -> None:
    # The messages name checkpoints, metadata and offset logs: words must not decide.
    message = ("[STREAM_FAILED] Query terminated with exception: org.apache.kafka.common.errors.TimeoutException: "
               "Timeout expired while fetching topic metadata (checkpoint hdfs://localhost:8020/lambda/checkpoints/"
               "ingest, offset log incompatible)")
    assert not _is_checkpoint_problem(QueryFailed(message, chain))


def test_only_query_failures_count() -> None:
    text = "Timeout expired while fetching topic metadata; checkpoint offset log incompatible"
    assert not _is_checkpoint_problem(RuntimeError(text))
    assert not _is_checkpoint_problem(StopIngest(text))


class FakeFrame:
    def __init__(self, cls: str) -> None:
        self.cls = cls

    def getClassName(self) -> str:  # noqa: N802 (Java's names, as py4j shows them)
        return self.cls


class FakeThrowable:
    """What py4j hands over for a Java exception: class, condition (SparkThrowable only), stack, cause."""

    def __init__(self, cls: str, condition: str | None, frames: list[str], cause=None) -> None:
        self.cls, self.condition, self.frames, self.cause = cls, condition, frames, cause

    def getClass(self):  # noqa: N802
        return type("JavaClass", (), {"getName": lambda _self: self.cls})()

    def getCondition(self):  # noqa: N802
        if self.condition is None:
            raise AttributeError("not a SparkThrowable")
        return self.condition

    def getStackTrace(self):  # noqa: N802
        return [FakeFrame(f) for f in self.frames]

    def getCause(self):  # noqa: N802
        return self.cause


def test_the_java_chain_is_read_outermost_first() -> None:
    inner = FakeThrowable("org.apache.spark.SparkIllegalStateException", "MALFORMED_LOG_FILE",
                          ["scala.Predef$", "org.apache.spark.sql.errors.QueryExecutionErrors$"])
    middle = FakeThrowable("java.lang.IllegalStateException", None,
                           [METADATA_LOG], inner)
    outer = FakeThrowable("org.apache.spark.sql.streaming.StreamingQueryException", "STREAM_FAILED", [], middle)
    failure = QueryFailed.from_java("query failed", outer)
    assert failure.chain == [
        ("org.apache.spark.sql.streaming.StreamingQueryException", "STREAM_FAILED", None),
        ("java.lang.IllegalStateException", None, METADATA_LOG),
        ("org.apache.spark.SparkIllegalStateException", "MALFORMED_LOG_FILE",
         "org.apache.spark.sql.errors.QueryExecutionErrors$")]
    assert _is_checkpoint_problem(failure)
