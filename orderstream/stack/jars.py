"""The official Apache Kafka jars, resolved once with Maven into a per-user cache."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orderstream.errors import UserError
from orderstream.settings import KAFKA_VERSION

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parent / "pom.xml"
MARKER = ".complete"
STALE_TEMP_S = 3600


def default_cache_root() -> Path:
    # The XDG base-directory convention, not application configuration.
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orderstream"


def java_executable() -> str:
    java = shutil.which("java")
    if java is None:
        raise UserError(
            "java not found on PATH: install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
        )
    return java


def jar_dir(cache_root: Path | None = None) -> Path:
    """The directory holding the Kafka jars, fetching them on first use."""
    return maven_cache(
        POM, (cache_root or default_cache_root()) / f"kafka-{KAFKA_VERSION}", f"the Kafka {KAFKA_VERSION} jars",
        goal=lambda out: ["dependency:copy-dependencies", f"-DoutputDirectory={out}", "-DincludeScope=runtime"],
        complete=lambda out: any(out.glob("*.jar")),
    )


def classpath(cache_root: Path | None = None) -> str:
    return os.pathsep.join(str(jar) for jar in sorted(jar_dir(cache_root).glob("*.jar")))


def maven_cache(
    pom: Path, final: Path, what: str, goal: Callable[[Path], list[str]], complete: Callable[[Path], bool]
) -> Path:
    """`final`, filled once by running Maven's `goal(temp dir)` on `pom`; `complete` says whether
    the temp dir holds what was asked for. A killed fetch never looks like a cache: it runs into a
    temp dir that is renamed into place with a marker."""
    if (final / MARKER).exists():
        return final
    java_executable()  # Maven needs it too; say so before Maven does, less clearly.
    mvn = shutil.which("mvn")
    if mvn is None:
        raise UserError("mvn not found on PATH: install Apache Maven (e.g. apt-get install maven)")
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    log.info("fetching %s with Maven (first use only)…", what)
    temp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        result = subprocess.run([mvn, "-q", "-B", "-f", str(pom), *goal(temp)], capture_output=True, text=True)
        if result.returncode != 0 or not complete(temp):
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            raise UserError(f"Maven could not fetch {what}: {' | '.join(tail) or 'nothing fetched'}")
        (temp / MARKER).write_text("\n".join(sorted(p.name for p in temp.iterdir())) + "\n")
        temp.chmod(0o755)
        if final.exists() and not (final / MARKER).exists():
            shutil.rmtree(final)  # a cache from before markers existed; never trust it
        try:
            temp.rename(final)
        except OSError:
            if not (final / MARKER).exists():  # not a concurrent fetch that won the race
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def _remove_stale_temps(final: Path) -> None:
    for temp in final.parent.glob(f".{final.name}-*"):
        try:
            stale = time.time() - temp.stat().st_mtime > STALE_TEMP_S
        except FileNotFoundError:  # another fetch just cleaned it up
            continue
        if stale:
            shutil.rmtree(temp, ignore_errors=True)
