"""A real Spark standalone cluster on loopback, started with pyspark's own scripts.

pip's pyspark ships ``bin/spark-class`` (not ``sbin/start-master.sh``), so the
master and workers are started as ``spark-class org.apache.spark.deploy.*``
processes bound to 127.0.0.1 with OS-chosen ports, and stopped afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(pattern: str, log: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        m = re.search(pattern, text)
        if m:
            return m.group(0)
        if proc.poll() is not None:
            raise RuntimeError(f"Spark daemon exited early:\n{text[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"Spark daemon did not report {pattern!r}:\n{log.read_text(errors='replace')[-3000:]}")


def spark_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for spark-class/spark-submit: this venv's Python everywhere, loopback only."""
    env = dict(os.environ)
    env.update(
        {
            "SPARK_HOME": str(SPARK_HOME),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_HOSTNAME": "localhost",
        }
    )
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    env.update(extra or {})
    return env


def start_cluster(
    workdir: Path, workers: int = 2, cores: int = 1, memory: str = "1g"
) -> tuple[str, list[int]]:
    """Start a master and ``workers`` workers on 127.0.0.1; return the master URL and their PIDs.

    The daemons run in their own session, so they outlive the process that
    started them (one pytest-xdist worker) and serve the whole test session;
    :func:`stop_cluster` ends them.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    env = spark_env()
    procs: list[subprocess.Popen[bytes]] = []

    def launch(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [spark_class, *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    try:
        port, ui = _free_port(), _free_port()
        log = workdir / "master.log"
        master = launch(
            ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(ui)],
            log,
        )
        url = f"spark://127.0.0.1:{port}"
        _wait_for(r"Starting Spark master at spark://\S+", log, master)
        for i in range(workers):
            wlog = workdir / f"worker{i}.log"
            w = launch(
                ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                 "--memory", memory, "--webui-port", str(_free_port()),
                 "--work-dir", str(workdir / f"work{i}"), url],
                wlog,
            )
            _wait_for(r"Successfully registered with master", wlog, w)
    except BaseException:
        stop_cluster([p.pid for p in procs])
        raise
    return url, [p.pid for p in procs]


def stop_cluster(pids: list[int], timeout: float = 20) -> None:
    """Terminate a cluster's daemons (and their executors), then kill what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)  # each daemon leads its own session (start_cluster)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.2)
        if not any(_alive(pid) for pid in pids):
            return


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def spark_submit(
    master: str,
    script: Path,
    args: list[str],
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600,
    conf: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``spark-submit`` of a job script against ``master``; return the finished process.

    ``conf`` adds Spark settings (``--conf KEY=VALUE``).
    """
    cmd = [
        str(SPARK_HOME / "bin" / "spark-submit"),
        "--master",
        master,
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        "spark.executor.memory=1g",
        "--conf",
        "spark.ui.enabled=false",
        *(arg for key, value in (conf or {}).items() for arg in ("--conf", f"{key}={value}")),
        str(script),
        *args,
    ]
    return subprocess.run(
        cmd, cwd=workdir, env=spark_env(extra_env), capture_output=True, text=True, timeout=timeout
    )
