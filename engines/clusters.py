"""Real Flink and Spark clusters on this machine, each behind Beam's own job server, started
from what `make engines` put in .cache/engines: a Flink JobManager and TaskManager, or a Spark
standalone master and worker, each a JVM of its own, launched as the distributions' own scripts
launch them; then Beam's FlinkJobServerDriver or SparkJobServerDriver pointed at the cluster.

The e2e tests start them (tests/e2e/test_flink.py, test_spark.py). `make flink` and `make spark`
run one until Ctrl-C, and say how `make run` serves Beamjobs with it:

    python -m engines.clusters flink|spark [--job-port PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "engines"
FLINK_HOME = CACHE / "flink"
SPARK_HOME = CACHE / "spark"
FLINK_JOB_SERVER = CACHE / "flink-job-server"
SPARK_JOB_SERVER = CACHE / "spark-job-server"

# Flink 1.16 and Spark 3.5 reach into the JDK's internals, which Java 17 closes unless opened
# (Flink's own launch scripts open the same from 1.18 on; Spark's launcher opens them for its
# executors, not for a driver it did not launch, such as Beam's Spark job server).
JAVA17_OPENS = [
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    *(
        f"--add-opens=java.base/{package}=ALL-UNNAMED"
        for package in (
            "java.lang",
            "java.lang.invoke",
            "java.lang.reflect",
            "java.io",
            "java.math",
            "java.net",
            "java.nio",
            "java.text",
            "java.time",
            "java.util",
            "java.util.concurrent",
            "java.util.concurrent.atomic",
            "java.util.concurrent.locks",
            "sun.nio.ch",
            "sun.nio.cs",
            "sun.security.action",
            "sun.util.calendar",
        )
    ),
]
# Beam's job servers: Java's expansion service off (the clusters run Python pipelines).
_JOB_SERVER_FLAGS = ["--artifact-port", "0", "--expansion-port", "-1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _answers(check) -> bool:
    """Whether `check()` holds, false while the server it asks is not yet listening."""
    try:
        return bool(check())
    except OSError:
        return False


class Jvm:
    """One JVM of a cluster, in a process group of its own, its output in a log file."""

    def __init__(self, name: str, args: list[str], logs: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log = logs / f"{name}.log"
        with self.log.open("w") as out:
            self.popen = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def wait_until(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log.read_text()[-4000:]}")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: no {what} in {timeout:.0f} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL, the whole group (a launch script's JVM with it)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def _java(classpath: str, main: str, *args: str, jvm: tuple[str, ...] = ()) -> list[str]:
    return ["java", *JAVA17_OPENS, *jvm, "-cp", classpath, main, *args]


class FlinkCluster:
    """A standalone Flink session cluster: a JobManager (REST API on `rest_port`) and a
    TaskManager of 2 slots. Losing a TaskManager is noticed in seconds (fast heartbeats), and
    a job whose TaskManager is lost fails: Flink restarts nothing unless asked."""

    def __init__(self, work: Path, *, rest_port: int | None = None) -> None:
        self.work = work
        self.rest_port = rest_port or free_port()
        self.conf = work / "conf"
        self.conf.mkdir(parents=True, exist_ok=True)
        settings = {
            "jobmanager.rpc.address": "localhost",
            "jobmanager.rpc.port": free_port(),
            "jobmanager.bind-host": "localhost",
            "taskmanager.bind-host": "localhost",
            "taskmanager.host": "localhost",
            "rest.address": "localhost",
            "rest.bind-address": "localhost",
            "rest.port": self.rest_port,
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.memory.process.size": "1536m",
            "taskmanager.numberOfTaskSlots": 2,
            "parallelism.default": 1,
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 5000,
            "io.tmp.dirs": str(work / "tmp"),
        }
        (self.conf / "flink-conf.yaml").write_text(
            "".join(f"{key}: {value}\n" for key, value in settings.items())
        )
        # Flink's log4j-console.properties, which the distribution's conf/ would hold: INFO.
        (self.conf / "log4j-console.properties").write_text(
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.console.ref = Console\n"
            "appender.console.name = Console\n"
            "appender.console.type = CONSOLE\n"
            "appender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = %d{HH:mm:ss,SSS} %-5p %c - %m%n\n"
        )
        self._logging = f"-Dlog4j.configurationFile={self.conf / 'log4j-console.properties'}"
        (work / "tmp").mkdir(exist_ok=True)
        self.jobmanager = Jvm(
            "jobmanager",
            _java(
                f"{FLINK_HOME}/lib/*",
                "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
                "--configDir",
                str(self.conf),
                jvm=("-Xmx512m", self._logging),
            ),
            work,
        )
        try:
            self.jobmanager.wait_until(lambda: _port_open(self.rest_port), 90, "REST API")
            self.taskmanager = self.start_taskmanager()
        except BaseException:
            self.jobmanager.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://localhost:{self.rest_port}"

    @property
    def master(self) -> str:
        """What Beam's Flink job server takes as --flink-master."""
        return f"localhost:{self.rest_port}"

    def rest(self, path: str) -> dict:
        """A GET of Flink's REST API."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return dict(json.load(response))

    def start_taskmanager(self) -> Jvm:
        """A TaskManager, with the memory that Flink's own taskmanager.sh computes for it."""
        computed = subprocess.run(
            _java(
                f"{FLINK_HOME}/lib/*:{FLINK_HOME}/bin/bash-java-utils.jar",
                "org.apache.flink.runtime.util.bash.BashJavaUtils",
                "GET_TM_RESOURCE_PARAMS",
                "--configDir",
                str(self.conf),
            ),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        jvm_params, dynamic = [
            line.removeprefix("BASH_JAVA_UTILS_EXEC_RESULT:").split()
            for line in computed.splitlines()
            if line.startswith("BASH_JAVA_UTILS_EXEC_RESULT:")
        ]
        registered = self.rest("/overview")["taskmanagers"]
        taskmanager = Jvm(
            f"taskmanager-{int(time.time() * 1000)}",
            _java(
                f"{FLINK_HOME}/lib/*",
                "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
                "--configDir",
                str(self.conf),
                *dynamic,
                jvm=(*jvm_params, self._logging),
            ),
            self.work,
        )
        try:
            joined = lambda: self.rest("/overview")["taskmanagers"] > registered  # noqa: E731
            taskmanager.wait_until(lambda: _answers(joined), 90, "registration")
        except BaseException:
            taskmanager.stop()
            raise
        self.taskmanager = taskmanager
        return taskmanager

    def stop(self) -> None:
        self.taskmanager.stop()
        self.jobmanager.stop()


class SparkCluster:
    """A Spark standalone cluster: a master (spark://localhost:`port`) and a worker of 2 cores,
    started with the distribution's spark-class."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.ui_port = free_port()
        env = {"SPARK_HOME": str(SPARK_HOME), "SPARK_LOG_DIR": str(work)}
        spark_class = str(SPARK_HOME / "bin" / "spark-class")
        self.master = Jvm(
            "spark-master",
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "localhost",
                "--port",
                str(self.port),
                "--webui-port",
                str(self.ui_port),
            ],
            work,
            env,
        )
        try:
            self.master.wait_until(lambda: _port_open(self.port), 90, "master port")
            self.worker = self._start_worker(work, spark_class, env)
        except BaseException:
            self.master.stop()
            raise

    def _start_worker(self, work: Path, spark_class: str, env: dict[str, str]) -> Jvm:
        (work / "worker").mkdir(exist_ok=True)
        worker = Jvm(
            "spark-worker",
            [
                spark_class,
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "localhost",
                "--webui-port",
                str(free_port()),
                "--cores",
                "2",
                "--memory",
                "2g",
                "--work-dir",
                str(work / "worker"),
                self.url,
            ],
            work,
            env,
        )
        try:
            alive = lambda: self.status()["aliveworkers"] > 0  # noqa: E731
            worker.wait_until(lambda: _answers(alive), 90, "worker")
        except BaseException:
            worker.stop()
            raise
        return worker

    @property
    def url(self) -> str:
        return f"spark://localhost:{self.port}"

    def status(self) -> dict:
        """The master's status page, as JSON (workers, active and completed applications)."""
        with urllib.request.urlopen(f"http://localhost:{self.ui_port}/json/", timeout=10) as page:
            return dict(json.load(page))

    def stop(self) -> None:
        self.worker.stop()
        self.master.stop()


class JobServer:
    """Beam's job server for a cluster, its Job API on localhost:`port`."""

    def __init__(self, jvm: Jvm, port: int) -> None:
        self.jvm = jvm
        self.port = port
        self.endpoint = f"localhost:{port}"
        try:
            jvm.wait_until(lambda: _port_open(port), 120, "Job API")
        except BaseException:
            jvm.stop()
            raise

    @classmethod
    def flink(cls, cluster: FlinkCluster, work: Path, port: int | None = None) -> JobServer:
        port = port or free_port()
        main = "org.apache.beam.runners.flink.FlinkJobServerDriver"
        args = ["--flink-master", cluster.master, "--job-port", str(port), *_JOB_SERVER_FLAGS]
        args += ["--artifacts-dir", str(work / "artifacts")]
        return cls(Jvm("flink-job-server", _java(f"{FLINK_JOB_SERVER}/*", main, *args), work), port)

    @classmethod
    def spark(cls, cluster: SparkCluster, work: Path, port: int | None = None) -> JobServer:
        port = port or free_port()
        main = "org.apache.beam.runners.spark.SparkJobServerDriver"
        args = ["--spark-master-url", cluster.url, "--job-port", str(port), *_JOB_SERVER_FLAGS]
        args += ["--artifacts-dir", str(work / "artifacts")]
        classpath = f"{SPARK_HOME}/jars/*:{SPARK_JOB_SERVER}/*"
        return cls(Jvm("spark-job-server", _java(classpath, main, *args), work), port)

    def kill(self) -> None:
        self.jvm.kill()

    def stop(self) -> None:
        self.jvm.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=["flink", "spark"])
    parser.add_argument("--job-port", type=int, default=8097)
    parser.add_argument("--flink-rest-port", type=int, default=8081, help="Flink's REST API and UI")
    parser.add_argument("--work", type=Path, default=CACHE / "run")
    args = parser.parse_args()
    work = args.work / args.engine
    work.mkdir(parents=True, exist_ok=True)
    cluster = (
        FlinkCluster(work, rest_port=args.flink_rest_port)
        if args.engine == "flink"
        else SparkCluster(work)
    )
    try:
        _serve(cluster, work, args.job_port)
    finally:
        cluster.stop()


def _serve(cluster: FlinkCluster | SparkCluster, work: Path, job_port: int) -> None:
    """Beam's job server for `cluster`, until SIGINT or SIGTERM."""
    if isinstance(cluster, FlinkCluster):
        server = JobServer.flink(cluster, work, job_port)
        where = f"Flink's web UI on {cluster.url}"
        serve = f"ENGINES=flink={server.endpoint} FLINK_REST=flink={cluster.master}"
    else:
        server = JobServer.spark(cluster, work, job_port)
        where = f"the Spark master {cluster.url}"
        serve = f"ENGINES=spark={server.endpoint}"
    print(
        f"Beam's job server on {server.endpoint} ({where}; logs in {work}).\n"
        f"Serve Beamjobs with it: make run {serve}",
        flush=True,
    )
    stop = {signal.SIGINT, signal.SIGTERM}
    try:
        # Blocked only now: the JVMs, started before, keep these signals of their own.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        signal.sigwait(stop)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
