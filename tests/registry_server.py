"""A throwaway Apicurio Registry 3 for the tests: a real Schema Registry whose Confluent-compatible API
(`/apis/ccompat/v7`) confluent-kafka's serde talks to, on free loopback ports, in-memory storage.

Its distribution is resolved with Maven from `tests/registry/pom.xml` into the per-user cache the
Kafka jars use (first use only, about 160 MB). It needs Java 21 or later; `find_java` looks at
$REGISTRY_JAVA, $JAVA_HOME, `java` on PATH and the JDKs under /usr/lib/jvm.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from orderstream.errors import UserError
from orderstream.processes import LOCALHOST, Child, free_ports, wait_until
from orderstream.stack.jars import default_cache_root, maven_cache

POM = Path(__file__).resolve().parent / "registry" / "pom.xml"
VERSION = re.search(r"<apicurio.version>([^<]+)</apicurio.version>", POM.read_text()).group(1)  # type: ignore[union-attr]
MIN_JAVA = 21  # Apicurio Registry 3's class files
START_TIMEOUT_S = 240.0  # 10 s idle; over a minute on 2 busy cores
JVM_DIRS = Path("/usr/lib/jvm")


def java_major(java: str) -> int | None:
    """The feature version of a `java` executable (17, 21, 25, ...), or None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java() -> str | None:
    """A Java 21+ executable, or None where this machine has none."""
    candidates = [os.environ.get("REGISTRY_JAVA")]
    if java_home := os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(java_home) / "bin" / "java"))
    candidates.append(shutil.which("java"))
    candidates += sorted((str(p) for p in JVM_DIRS.glob("*/bin/java")), reverse=True)
    for java in dict.fromkeys(c for c in candidates if c):
        if Path(java).exists() and (java_major(java) or 0) >= MIN_JAVA:
            return java
    return None


def distribution(cache_root: Path | None = None) -> Path:
    """The unpacked registry (its `quarkus-run.jar`), fetched with Maven on first use."""
    return maven_cache(
        POM, (cache_root or default_cache_root()) / f"apicurio-registry-{VERSION}", f"Apicurio Registry {VERSION}",
        # The plugin's unpack markers go beside the unpacked files, not into a target/ of the checkout.
        goal=lambda out: ["dependency:unpack-dependencies", f"-DoutputDirectory={out}",
                          f"-DmarkersDirectory={out / '.maven-markers'}"],
        complete=lambda out: (out / "quarkus-run.jar").exists(),
    )


class ThrowawayRegistry:
    """`with ThrowawayRegistry(java, workdir) as registry:` a fresh registry at `registry.url`."""

    def __init__(self, java: str, workdir: Path) -> None:
        self.java = java
        self.workdir = workdir
        self.port = 0
        self._health = ""
        self._child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/apis/ccompat/v7"

    def __enter__(self) -> ThrowawayRegistry:
        home = distribution()
        self.port, management = free_ports(2)
        self._health = f"http://{LOCALHOST}:{management}/health/ready"
        argv = [
            self.java, "-Xmx512m",
            f"-Dquarkus.http.host={LOCALHOST}", f"-Dquarkus.http.port={self.port}",
            # The management port (health) defaults to 0.0.0.0:9000: two registries would collide.
            f"-Dquarkus.management.host={LOCALHOST}", f"-Dquarkus.management.port={management}",
            # Without it the ccompat API answers 500 to compatibility checks of draft 2020-12 schemas.
            "-Dapicurio.compat.json-schema.use-apitomy=true",
            "-Dquarkus.http.access-log.enabled=false", "-Dquarkus.log.level=WARN",
            "-jar", str(home / "quarkus-run.jar"),
        ]
        self._child = Child.start("schema-registry", argv, env=os.environ, cwd=self.workdir,
                                  log_path=self.workdir / "registry.log")
        if not wait_until(self._ready, START_TIMEOUT_S, interval=0.5):
            self.__exit__(None, None, None)
            raise UserError(f"Apicurio Registry did not become ready within {START_TIMEOUT_S:.0f}s")
        return self

    def _ready(self) -> bool:
        assert self._child is not None
        if not self._child.alive():
            raise UserError(f"Apicurio Registry exited while starting:\n{self._child.tail()}")
        try:
            with urllib.request.urlopen(self._health, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):  # not listening yet, or not ready (503)
            return False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None
