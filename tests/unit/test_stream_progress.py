"""What is kept of Spark's StreamingQueryProgress (its JSON, as Spark 4.2 writes it)."""

from __future__ import annotations

import json

from lambdaflow.monitoring import stream_progress

PROGRESS = json.loads("""{
  "id" : "a1", "runId" : "r1", "name" : null, "timestamp" : "2026-11-30T04:00:01.500Z", "batchId" : 7,
  "batchDuration" : 812, "numInputRows" : 1200, "inputRowsPerSecond" : 1000.0, "processedRowsPerSecond" : 1477.8,
  "durationMs" : {"addBatch" : 640, "getBatch" : 0, "latestOffset" : 3, "queryPlanning" : 12, "triggerExecution" : 812,
                  "walCommit" : 40},
  "stateOperators" : [ ],
  "sources" : [ {
    "description" : "KafkaV2[Subscribe[weblogs]]",
    "startOffset" : {"weblogs" : {"2" : 400, "1" : 380, "0" : 420}},
    "endOffset" : {"weblogs" : {"2" : 800, "1" : 780, "0" : 820}},
    "latestOffset" : {"weblogs" : {"2" : 900, "1" : 780, "0" : 820}},
    "numInputRows" : 1200, "inputRowsPerSecond" : 1000.0, "processedRowsPerSecond" : 1477.8,
    "metrics" : {"avgOffsetsBehindLatest" : "33.3", "maxOffsetsBehindLatest" : "100", "minOffsetsBehindLatest" : "0"}
  } ],
  "sink" : {"description" : "ForeachBatchSink", "numOutputRows" : -1}
}""")


def test_progress_record_keeps_rates_durations_rows_and_source_offsets() -> None:
    record = stream_progress.progress_record(PROGRESS, "weblogs")
    assert record["at"] == 1796011201500 and record["batch_id"] == 7 and record["rows"] == 1200
    assert record["input_rows_per_s"] == 1000.0 and record["processed_rows_per_s"] == 1477.8
    assert record["batch_duration_ms"] == 812 and record["durations_ms"]["addBatch"] == 640
    assert record["start_offsets"] == {"0": 420, "1": 380, "2": 400}
    assert record["end_offsets"] == {"0": 820, "1": 780, "2": 800}
    assert record["latest_offsets"]["2"] == 900


def test_an_idle_or_partial_progress_is_kept_without_failing() -> None:
    record = stream_progress.progress_record({"timestamp": "2026-11-30T04:00:00Z", "batchId": 8, "numInputRows": 0,
                                              "sources": [{"startOffset": None, "endOffset": "not json"}]})
    assert record["rows"] == 0 and record["start_offsets"] is None and record["end_offsets"] is None
    assert record["batch_duration_ms"] == 0
