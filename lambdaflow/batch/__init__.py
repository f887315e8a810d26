"""The batch layer: exact, idempotent recomputation of the views, hour by hour, from the landing zone.

``lambdaflow batch --hour H | --from A --to B | --all``, the ``weblogs_batch`` and ``weblogs_full_recompute``
DAGs' tasks (``@task.pyspark`` clients of the deployment's Spark Connect server) and
``spark_jobs/batch_recompute.py`` (the same under ``spark-submit``) read only the landing-zone partitions ``timestamp_hour=<h>`` of the hours
asked for, de-duplicate on (topic, kafka_partition, kafka_offset) when a Kafka record landed twice (the commit
log proves it did not when every hour holds at most the rows its manifests landed; otherwise
:func:`lambdaflow.views.record_census` finds out without a shuffle), compute ``activity_by_product`` and
``visitors_by_product`` exactly (:mod:`lambdaflow.views`) and replace exactly those hours.

Layout under ``{batch_root}`` (``/lambda/batch``)::

    _CURRENT                                   {"version": N}: the version readers use (absent = 1)
    <view>/v<N>/timestamp_hour=<h>/part-*.parquet   one file per view and hour
    _hours/v<N>/<h>.json                       the hour record: what the recomputation saw and wrote
    _observations/<h>.json                     the completeness sensor's log-end offsets for hour h

Rules:

- **Replacing an hour.** Both views are written for all hours of a run into a hidden staging directory
  (``<view>/_staging/<run>``), then each hour's directory is swapped in with two HDFS renames (live ->
  trash, staged -> live); an hour without rows loses its directory. Then the hour record is written
  (atomic rename-over). Re-running an hour writes the same rows again: nothing changes.
- **Batch watermark.** The hours with a record in the current version are the hours the batch layer
  covers; the watermark is the last hour of the contiguous run of covered hours that starts at the first
  one (:func:`batch_watermark`). Every recomputation records every hour it was asked for, empty hours
  included, so hourly runs keep the run contiguous. The serving query answers covered hours from the
  batch views and every other hour from the speed views (:mod:`lambdaflow.serving`).
- **Late data.** A record keeps the number of rows its recomputation read (``landed_rows``; also the
  landing positions it saw and ``rows_below_positions``, for the record). Every committed manifest
  carries, in its ``"hours"``, the rows it landed per event hour, so an hour's landed count today is
  the sum over the commit log (the newest roll-up plus the manifests after it,
  :mod:`lambdaflow.storage.commit_log`: a run reads O(tail) manifests; hours archived by retention
  are left alone). Every run of ``--hour`` / ``--from
  --to`` (unless ``--no-late``) also recomputes every recorded hour of the current version, however
  old, whose landed count differs from its ``landed_rows`` (:func:`late_hours`): after the next run
  the batch views equal the landed rows for every hour. A batch still moving its files into place
  while an hour is read is counted by its manifest but not (fully) read, so the hour is recomputed by
  the next run too.
- **Failed hours.** A recomputation that fails writes ``_failed/v<N>/<h>.json`` for its hours (the
  DAG's ``record_failure`` task does it too); the watermark moves past failed hours, serving answers
  them from the speed layer flagged ``batch_failed``, and the next success removes the record.
- **One recomputation of an hour at a time.** Hourly runs, backfills (with their late hours),
  compactions and full recomputations take the hour's lock ``_locks/<h>.lock`` first
  (:class:`HourLocks`: create-if-absent, heartbeat, stale after ``LAMBDAFLOW_BATCH_LOCK_STALE_S``,
  released in ``finally``); a run that finds an hour locked waits for it.
- **Full recomputation** (``--all``; the DAG ``weblogs_full_recompute``): under the locks of every hour
  of history, recompute every hour from the first landed or recorded one up to the completeness
  boundary (:func:`completeness_boundary`) into version N+1, then switch ``_CURRENT`` with one atomic
  rename-over, then delete the older versions. Hourly runs wait meanwhile, then read the new version.
- **Compaction** (``--compact``) rewrites an hour's landing files into files of about 128 MB with exactly
  the same multiset of (topic, kafka_partition, kafka_offset), checked before commit. Files reach an
  hour directory only after their batch's manifest is committed (``lambdaflow.landing``); the files of
  a batch whose ``_staging/<key>`` still exists (moving, or awaiting the ingest's recovery) are left
  alone. The ingest never rewrites a committed range (it resumes after the landing positions), so a
  compacted file is never duplicated by a replay. Protocol (:func:`compact_hour`): take the hour's
  lock ``/lambda/batch/_locks/<h>.lock`` (:class:`HourLocks`) -> write the new files under ``_compact/<h>/<run>/``
  -> verify -> **commit** by writing ``_compactions/<h>.json`` (old names, new files) -> delete the old
  files -> move the new ones into the hour -> delete the record. Deleting before moving means a reader
  can, at worst, miss rows for a moment; it never sees both the old and the new files.
  **Recovery rule**: a ``_compactions/<h>.json`` that exists means committed, so roll forward (delete
  the old files still present, move the new files still staged; both steps are idempotent, and every
  batch read of the hour does this first); staged files without a record were never committed, so roll
  back (delete ``_compact/<h>/``; done by the next compaction of the hour, under its lock).

Any Spark session works (Spark Connect, local, spark-submit): the bookkeeping never needs the driver's
JVM, it goes over WebHDFS (:class:`BatchFs`, a :class:`lambdaflow.storage.fs.WebFs`).

Modules: :mod:`.layout` (paths, constants, time helpers, state readers, the batch file system),
:mod:`.completeness`, :mod:`.validation`, :mod:`.late`, :mod:`.locks`, :mod:`.recompute`,
:mod:`.compaction`, :mod:`.cli`. Everything is re-exported here (``from lambdaflow import batch;
batch.<name>``); a test that replaces a function patches the module that calls it.
"""

from lambdaflow.batch.layout import *  # noqa: F401,F403
from lambdaflow.batch.layout import Log, _print  # noqa: F401
from lambdaflow.batch.completeness import *  # noqa: F401,F403
from lambdaflow.batch.validation import *  # noqa: F401,F403
from lambdaflow.batch.late import *  # noqa: F401,F403
from lambdaflow.batch.locks import *  # noqa: F401,F403
from lambdaflow.batch.compaction import *  # noqa: F401,F403
from lambdaflow.batch.recompute import *  # noqa: F401,F403
from lambdaflow.batch.recompute import _replace_dir  # noqa: F401
from lambdaflow.batch.cli import *  # noqa: F401,F403
from lambdaflow.batch import cli, compaction, completeness, late, layout, locks, recompute, validation  # noqa: F401
