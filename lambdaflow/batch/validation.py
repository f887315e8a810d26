"""Validation of a recomputed hour without a JVM (WebHDFS and Parquet footers)."""

from __future__ import annotations

import struct

from typing import TYPE_CHECKING

from lambdaflow import hdfs, landing
from lambdaflow.config import Settings
from lambdaflow.errors import UserError

if TYPE_CHECKING:
    from hdfs import InsecureClient

from lambdaflow.batch.layout import *  # noqa: F401,F403 - the shared layout and helpers
from lambdaflow.batch.layout import Log, _print  # noqa: F401


# ---------------------------------------------------------------------- validation (no JVM)
class ValidationError(UserError):
    """The batch views of an hour do not add up to the rows landed in it."""


def _parquet_rows(c: "InsecureClient", path: str, length: int) -> int:
    """Rows of a Parquet file from its footer alone (two ranged WebHDFS reads at most)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tail_length = min(length, 64 * 1024)
    with c.read(path, offset=length - tail_length, length=tail_length) as reader:
        tail = reader.read()
    footer_length = struct.unpack("<i", tail[-8:-4])[0] + 8
    if footer_length > len(tail):
        with c.read(path, offset=length - footer_length, length=footer_length) as reader:
            tail = reader.read()
    return pq.read_metadata(pa.BufferReader(tail[-footer_length:])).num_rows


def read_parquet_dir(c: "InsecureClient", path: str, threads: int = 8):
    """All data files of an HDFS directory, downloaded in parallel, as one pyarrow Table (None if none)."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    def download(name: str):
        with c.read(f"{path}/{name}") as reader:
            return pq.read_table(io.BytesIO(reader.read()))

    names = [n for n in hdfs.list_names(c, path) if is_data_file(n)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        tables = list(pool.map(download, names))
    return pa.concat_tables(tables, promote_options="default") if tables else None


def landed_rows_at_rest(c: "InsecureClient", settings: Settings, hour: int) -> int:
    """Rows in the hour's landing files now, counted from the Parquet footers."""
    path = landing_hour_path(settings, hour)
    if c.status(path, strict=False) is None:
        return 0
    return sum(_parquet_rows(c, f"{path}/{name}", status["length"])
               for name, status in c.list(path, status=True)
               if is_data_file(name) and status["type"] == "FILE")


def validate_hour(settings: Settings, hour: int, client: "InsecureClient | None" = None) -> dict:
    """Check one recomputed hour without a JVM and return its figures (raise :class:`ValidationError`).

    The activity counts must add up to the rows the recomputation landed (``landed_rows`` in the hour
    record), both views must list the same products, each product's unique visitors must lie between 1
    and its number of events, and the landing zone must still hold at least those rows (counted from
    the Parquet footers). More rows at rest than recomputed is late data: reported, and the next run's
    late-data check recomputes the hour. An hour that was never recorded is valid only if nothing landed.
    """
    c = client or hdfs.client(settings)
    store = WebHdfsStore(c)
    version = current_version(store, settings)
    record = read_hour_record(store, settings, version, hour)
    at_rest = landed_rows_at_rest(c, settings, hour)
    summary = {"timestamp_hour": hour, "hour": iso(hour), "version": version, "landed_rows_at_rest": at_rest}
    if record is None:
        if at_rest:
            raise ValidationError(f"hour {iso(hour)} has {at_rest} landed rows but no batch record in v{version}")
        return {**summary, "landed_rows": 0, "products": 0, **dict.fromkeys(COUNT_COLUMNS, 0)}
    activity = read_parquet_dir(c, view_path(settings, "activity_by_product", version, hour))
    visitors = read_parquet_dir(c, view_path(settings, "visitors_by_product", version, hour))
    events: dict[str, int] = {}
    counts = dict.fromkeys(COUNT_COLUMNS, 0)
    for row in activity.to_pylist() if activity is not None else []:
        events[row["product"]] = sum(row[col] for col in COUNT_COLUMNS)
        for col in COUNT_COLUMNS:
            counts[col] += row[col]
    uniques = {row["product"]: row["unique_visitors"] for row in (visitors.to_pylist() if visitors is not None else [])}
    problems = []
    if sum(counts.values()) != record["landed_rows"]:
        problems.append(f"activity counts add up to {sum(counts.values())}, landed rows {record['landed_rows']}")
    if set(events) != set(uniques):
        problems.append(f"products differ between views: {sorted(set(events) ^ set(uniques), key=str)[:5]}")
    bad = [p for p, n in uniques.items() if not 1 <= n <= events.get(p, 0)]
    if bad:
        problems.append(f"unique visitors outside [1, events] for {bad[:5]}")
    if at_rest < record["landed_rows"]:
        problems.append(f"landing zone holds {at_rest} rows, fewer than the {record['landed_rows']} recomputed")
    if problems:
        raise ValidationError(f"hour {iso(hour)} (v{version}): " + "; ".join(problems))
    return {**summary, "landed_rows": record["landed_rows"], "products": len(events), **counts,
            "late_rows_since_recompute": at_rest - record["landed_rows"]}
