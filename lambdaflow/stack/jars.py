"""JVM jars from Maven Central, resolved from the declarative poms in ``jars/<set>/pom.xml``.

Three separate sets, because each needs its own versions of shared libraries:
``kafka`` (broker and tools), ``hadoop`` (NameNode, DataNode) and ``spark`` (Spark's Kafka
connector, minus what pyspark already ships). Each set is copied once into
``.cache/jars/<set>/`` by ``mvn dependency:copy-dependencies``; a stamp holding the pom's hash
makes re-runs instant and a changed pom re-resolves.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from lambdaflow.config import REPO_ROOT
from lambdaflow.spark import JARS_CACHE

JAR_SETS = ("kafka", "hadoop", "spark")
POM_DIR = REPO_ROOT / "jars"


def jar_dir(name: str) -> Path:
    return JARS_CACHE / name


def _stamp(name: str) -> str:
    return hashlib.sha256((POM_DIR / name / "pom.xml").read_bytes()).hexdigest()


def is_resolved(name: str) -> bool:
    stamp = jar_dir(name) / ".pom-sha256"
    return stamp.exists() and stamp.read_text() == _stamp(name)


def resolve(name: str, quiet: bool = False) -> Path:
    """Copy the jar set ``name`` into the cache unless it is already there for this pom."""
    target = jar_dir(name)
    if is_resolved(name):
        return target
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed to fetch the jars from Maven Central; install Maven 3.8+")
    if not quiet:
        print(f"[jars] resolving {name} jars from Maven Central into {target} ...", file=sys.stderr, flush=True)
    staging = target.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = ["mvn", "-B", "-q", "-f", str(POM_DIR / name / "pom.xml"), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"resolving the {name} jars failed ({' '.join(cmd)}):\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    (staging / ".pom-sha256").write_text(_stamp(name))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def resolve_all(quiet: bool = False) -> None:
    for name in JAR_SETS:
        resolve(name, quiet=quiet)


def classpath(name: str, *extra: Path) -> str:
    resolve(name)
    return ":".join([*(str(p) for p in extra), str(jar_dir(name) / "*")])
