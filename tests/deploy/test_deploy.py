"""Deployment (issue 7): the conf files, the Docker files, ``make dist`` and the notebook.

1. Every conf file is parsed and every command, job, class and path it names is checked
   against the repository, pyspark's jars and the jobs' own argument parsers (no cluster).
2. The compose sequence runs natively: ``docker/run-demo.sh`` (the compose file's one-shot
   service) against a loopback standalone cluster and the moto S3 endpoint standing in for
   MinIO, with the same conf files; the result is compared with samtools and mosdepth.
3. ``make dist`` builds the archive, and a job is spark-submitted from a fresh, unpacked copy
   of it with nothing else on the path.
4. ``examples/cohort_coverage.ipynb`` runs headless (nbclient) and its numbers match
   samtools and mosdepth on the BAMs it simulated.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import uuid
import zipfile
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from bams3_spark import open_dataset
from tests.support.oracles import ROOT, samtools
from tests.support.spark_cluster import SPARK_HOME, spark_env

CONF = ROOT / "conf"
DOCKER = ROOT / "docker"
JOBS = ROOT / "jobs"
DEPLOY_DOC = ROOT / "docs" / "sections" / "deploy.md"
NOTEBOOK = ROOT / "examples" / "cohort_coverage.ipynb"
#: Where the Dockerfile puts the repository's files in the image (its WORKDIR).
IMAGE_ROOT = "/opt/bams3"
#: Files `make dist` writes that conf/emr/bootstrap.sh and conf/dataproc/submit.sh fetch.
DIST_WHEEL_GLOB = "bams3_spark-*.whl"
DIST_REQUIREMENTS = "requirements-runtime.txt"
DIST_CONSTRAINTS = "constraints.txt"
DIST_ARCHIVE = "env.tar.gz"

needs_tools = pytest.mark.skipif(
    shutil.which("samtools") is None or shutil.which("mosdepth") is None, reason="needs samtools and mosdepth"
)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@cache
def job_module(name: str) -> ModuleType:
    """Import ``jobs/<name>.py`` (the jobs are scripts, not a package)."""
    path = JOBS / f"{name}.py"
    assert path.is_file(), f"{path.relative_to(ROOT)} does not exist"
    spec = importlib.util.spec_from_file_location(f"bams3_job_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_job_args(name: str, args: list[str], where: str) -> None:
    """Fail unless ``jobs/<name>.py`` accepts ``args`` (its own argparse parser decides)."""
    parser = job_module(name).build_parser()
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{where}: jobs/{name}.py rejects its arguments {args!r} (exit {exc.code})")


def job_name(script: str, where: str) -> str:
    """``.../jobs/coverage.py`` -> ``coverage``, checking that the job exists in the repository."""
    m = re.search(r"(?:^|/)jobs/(\w+)\.py$", script)
    assert m, f"{where}: {script!r} is not a jobs/*.py script"
    assert (JOBS / f"{m.group(1)}.py").is_file(), f"{where}: {script} names a job the repository lacks"
    return m.group(1)


#: spark-submit options that take a value (spark-submit --help); flags take none.
SUBMIT_VALUE_OPTIONS = {
    "--master", "--deploy-mode", "--conf", "-c", "--properties-file", "--archives", "--py-files",
    "--files", "--jars", "--packages", "--name", "--driver-memory", "--executor-memory",
    "--executor-cores", "--num-executors", "--driver-cores", "--queue", "--class",
}
SUBMIT_FLAGS = {"--verbose", "--supervise", "--load-spark-defaults"}


def split_submit(argv: list[str], where: str) -> tuple[dict[str, list[str]], str, list[str]]:
    """Split a spark-submit command line into (options, application script, application args)."""
    assert argv and argv[0].endswith("spark-submit"), f"{where}: not a spark-submit command: {argv!r}"
    opts: dict[str, list[str]] = {}
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        key, _, inline = argv[i].partition("=")
        if key in SUBMIT_FLAGS:
            opts.setdefault(key, []).append("")
            i += 1
        elif key in SUBMIT_VALUE_OPTIONS:
            if inline:
                opts.setdefault(key, []).append(inline)
                i += 1
            else:
                opts.setdefault(key, []).append(argv[i + 1])
                i += 2
        else:
            pytest.fail(f"{where}: unknown spark-submit option {argv[i]!r}")
    assert i < len(argv), f"{where}: spark-submit without an application"
    return opts, argv[i], argv[i + 1:]


def submit_confs(opts: dict[str, list[str]]) -> dict[str, str]:
    """The ``--conf key=value`` settings of a parsed spark-submit command."""
    return dict(v.split("=", 1) for v in opts.get("--conf", []) + opts.get("-c", []))


def read_properties(path: Path) -> dict[str, str]:
    """Parse a Spark/log4j properties file (``key value`` or ``key = value``), refusing duplicates."""
    props: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([^\s=]+)\s*(?:=|\s)\s*(.*)$", line)
        assert m, f"{path.name}:{n}: not a property line: {raw!r}"
        assert m.group(1) not in props, f"{path.name}:{n}: {m.group(1)} set twice"
        props[m.group(1)] = m.group(2).strip()
    return props


@cache
def spark_classes() -> frozenset[str]:
    """Every class and package path in pyspark's jars (``org/apache/spark/deploy/master/Master``)."""
    names: set[str] = set()
    for jar in (SPARK_HOME / "jars").glob("*.jar"):
        with zipfile.ZipFile(jar) as zf:
            for entry in zf.namelist():
                if entry.endswith(".class"):
                    names.add(entry[: -len(".class")])
                elif entry.endswith("/"):
                    names.add(entry.rstrip("/"))
    return frozenset(names)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def compose() -> dict[str, Any]:
    """docker/compose.yml, anchors and merge keys resolved."""
    doc = yaml.safe_load((DOCKER / "compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def run_demo_required_env() -> set[str]:
    """Variables docker/run-demo.sh refuses to run without (``${VAR:?...}``)."""
    return set(re.findall(r"\$\{(\w+):\?", (DOCKER / "run-demo.sh").read_text()))


def doc_commands() -> list[list[str]]:
    """The shell commands of docs/sections/deploy.md's code blocks, continuation lines joined."""
    text = DEPLOY_DOC.read_text()
    commands = []
    for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        if lang not in ("sh", "bash", "shell", ""):
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip().removeprefix("$ ")
            # Whole-line comments only: '#' inside a word (env.tar.gz#environment) is not one.
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def depth_lines_from_mosdepth(bam: Path, workdir: Path) -> list[str]:
    """mosdepth's per-base output (the oracle), as ``rname start end depth`` lines."""
    prefix = workdir / bam.stem
    subprocess.run(["mosdepth", "-t", "1", str(prefix), str(bam)], check=True, capture_output=True)
    with gzip.open(f"{prefix}.per-base.bed.gz", "rt") as fh:
        return [line.rstrip("\n") for line in fh]


def mosdepth_windows(bam: Path, by: int, workdir: Path) -> dict[tuple[str, int], str]:
    """mosdepth ``--by`` means: (rname, start) -> mean as mosdepth prints it (2 decimals)."""
    prefix = workdir / f"{bam.stem}.by{by}"
    subprocess.run(["mosdepth", "-n", "-t", "1", "--by", str(by), str(prefix), str(bam)],
                   check=True, capture_output=True)
    with gzip.open(f"{prefix}.regions.bed.gz", "rt") as fh:
        rows = [line.split("\t") for line in fh.read().splitlines()]
    return {(r[0], int(r[1])): r[3] for r in rows}


# ---------------------------------------------------------------------------------------------
# 1. The conf files name only things that exist
# ---------------------------------------------------------------------------------------------


def test_spark_defaults_match_the_session_defaults() -> None:
    from bams3_spark.spark.session import DEFAULT_CONF, LOCAL_CONF

    props = read_properties(CONF / "spark-defaults.conf")
    assert all(key.startswith("spark.") for key in props), props
    # The file and get_session() must agree, so jobs behave the same with or without it.
    assert props == DEFAULT_CONF
    # A driver address in a shared conf file would break every cluster driver.
    assert not set(props) & set(LOCAL_CONF)


def test_spark_defaults_s3_endpoint_variables_are_the_ones_the_package_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bams3_spark.io.storage import normalize_options

    text = (CONF / "spark-defaults.conf").read_text()
    variables = set(re.findall(r"\bAWS_ENDPOINT_URL\w*", text))
    assert variables >= {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"}
    for var in sorted(variables):
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        monkeypatch.setenv(var, f"http://{var.lower()}.invalid:9000")
        assert normalize_options("s3", {})["endpoint_url"] == f"http://{var.lower()}.invalid:9000"
    # Executors get the endpoint through spark.executorEnv, as the comments show.
    assert re.search(r"spark\.executorEnv\.AWS_ENDPOINT_URL\s", text)


def test_log4j2_properties_name_real_loggers() -> None:
    props = read_properties(CONF / "log4j2.properties")
    assert props["rootLogger.level"] == "warn"
    appender = props["rootLogger.appenderRef.stdout.ref"]
    assert props["appender.console.name"] == appender
    loggers = {k.split(".")[1] for k in props if k.startswith("logger.")}
    assert loggers
    classes = spark_classes()
    for logger in sorted(loggers):
        name, level = props[f"logger.{logger}.name"], props[f"logger.{logger}.level"]
        assert level in {"trace", "debug", "info", "warn", "error", "fatal", "off"}, (logger, level)
        assert name.replace(".", "/") in classes, f"log4j2.properties: no class or package {name} in Spark"


def test_emr_steps_run_existing_jobs_with_accepted_arguments() -> None:
    steps = json.loads((CONF / "emr" / "steps.json").read_text())
    bootstrap = (CONF / "emr" / "bootstrap.sh").read_text()
    venv = re.search(r"^VENV=(\S+)$", bootstrap, flags=re.M)
    root = re.search(r"^ROOT=(\S+)$", bootstrap, flags=re.M)
    assert venv and root
    venv_python = venv.group(1).replace("$ROOT", root.group(1)) + "/bin/python"
    names = set()
    assert steps
    for step in steps:
        where = f"steps.json: {step['Name']!r}"
        assert step["Type"] == "CUSTOM_JAR" and step["Jar"] == "command-runner.jar", where
        assert step["ActionOnFailure"] in {"CONTINUE", "CANCEL_AND_WAIT", "TERMINATE_CLUSTER"}, where
        opts, script, args = split_submit(step["Args"], where)
        # Jobs are uploaded with `make dist` output (dist/jobs/*.py).
        assert script.startswith("s3://") and "/dist/jobs/" in script, where
        name = job_name(script, where)
        names.add(name)
        check_job_args(name, args, where)
        assert opts["--deploy-mode"] == ["cluster"], where
        # Driver and executors run the interpreter the bootstrap action installs on every node.
        assert submit_confs(opts)["spark.pyspark.python"] == venv_python, where
    assert names >= {"convert", "query", "coverage"}


def test_emr_bootstrap_fetches_what_make_dist_builds() -> None:
    script = CONF / "emr" / "bootstrap.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for name in (DIST_WHEEL_GLOB, DIST_REQUIREMENTS, DIST_CONSTRAINTS):
        assert f'--include "{name}"' in text, name
    makefile = (ROOT / "Makefile").read_text()
    for name in (DIST_REQUIREMENTS, DIST_CONSTRAINTS, DIST_ARCHIVE):
        assert f"> $(DIST)/{name}" in makefile or f"-o $(DIST)/{name}" in makefile, name


def _fake_gcloud(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A ``gcloud`` stand-in on PATH that records its argv (one JSON list per call)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "gcloud.calls"
    fake = bindir / "gcloud"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    return env, log


COVERAGE_EXAMPLE_ARGS = ["gs://b/cohort/NA12878.bams3", "gs://b/cohort/NA12891.bams3", "--by", "500",
                         "--out", "gs://b/results/coverage-500bp"]
DATAPROC_EXAMPLES = [
    ["convert", "gs://b/bams/NA12878.bam", "gs://b/cohort/NA12878.bams3"],
    ["query", "gs://b/cohort/*.bams3", "--region", "chr17:43044295-43125364", "--count", "--out", "gs://b/r"],
]


def test_dataproc_submit_ships_the_archive_to_existing_jobs(tmp_path: Path) -> None:
    env, log = _fake_gcloud(tmp_path)
    env.update(CLUSTER="c1", REGION="europe-west1", DIST="gs://b/bams3/dist")
    examples = [*DATAPROC_EXAMPLES, ["coverage", *COVERAGE_EXAMPLE_ARGS]]
    for example in examples:
        subprocess.run([str(CONF / "dataproc" / "submit.sh"), *example], env=env, check=True)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == len(examples)
    for example, argv in zip(examples, calls, strict=True):
        where = f"submit.sh {example[0]}"
        assert argv[:4] == ["dataproc", "jobs", "submit", "pyspark"], where
        assert argv[4] == f"gs://b/bams3/dist/jobs/{example[0]}.py", where
        job_name(argv[4], where)
        flags = dict(a.split("=", 1) for a in argv[5:argv.index("--")])
        assert flags["--cluster"] == "c1" and flags["--region"] == "europe-west1", where
        archive, alias = flags["--archives"].split("#")
        assert archive == f"gs://b/bams3/dist/{DIST_ARCHIVE}", where
        props = dict(p.split("=", 1) for p in flags["--properties"].split(","))
        # The interpreter lives in the unpacked archive, in every YARN container (cluster mode).
        assert props["spark.pyspark.python"] == f"./{alias}/bin/python", where
        assert props["spark.pyspark.driver.python"] == f"./{alias}/bin/python", where
        assert props["spark.submit.deployMode"] == "cluster", where
        assert argv[argv.index("--") + 1:] == example[1:], where
        check_job_args(example[0], example[1:], where)


def test_dataproc_submit_names_a_missing_setting(tmp_path: Path) -> None:
    env, log = _fake_gcloud(tmp_path)
    env.update(REGION="europe-west1", DIST="gs://b/bams3/dist")
    env.pop("CLUSTER", None)
    proc = subprocess.run([str(CONF / "dataproc" / "submit.sh"), "convert", "a.bam", "a.bams3"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "CLUSTER" in proc.stderr
    assert not log.exists()


def _fake_tool(tmp_path: Path, name: str) -> tuple[dict[str, str], Path]:
    """A command named ``name`` on PATH that records its argv (one JSON list per call)."""
    bindir = tmp_path / f"bin-{name}"
    bindir.mkdir()
    log = tmp_path / f"{name}.calls"
    fake = bindir / name
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, log


@pytest.mark.parametrize(("release", "ok"), [(None, True), ("emr-7.2.0", True), ("emr-spark-8.0.0", True),
                                             ("emr-6.15.0", False)])
def test_emr_create_cluster_takes_releases_with_spark_3_5_to_4(tmp_path: Path, release: str | None,
                                                               ok: bool) -> None:
    env, log = _fake_tool(tmp_path, "aws")
    env["BUCKET"] = "b"
    env.pop("EMR_RELEASE", None)
    if release:
        env["EMR_RELEASE"] = release
    proc = subprocess.run([str(CONF / "emr" / "create-cluster.sh")], env=env, capture_output=True, text=True)
    if not ok:
        assert proc.returncode == 2 and "Spark 3.5 to 4.3" in proc.stderr and not log.exists()
        return
    assert proc.returncode == 0, proc.stderr
    argv = json.loads(log.read_text())
    flags = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert argv[:2] == ["emr", "create-cluster"]
    assert flags["--release-label"] == (release or "emr-7.13.0")
    assert flags["--bootstrap-actions"] == "Path=s3://b/bams3/conf/emr/bootstrap.sh,Args=[s3://b/bams3/dist]"
    assert "python3.11" in (CONF / "emr" / "bootstrap.sh").read_text()


@pytest.mark.parametrize(("image", "ok"), [(None, True), ("2.3", True), ("3.0", True), ("2.1", False)])
def test_dataproc_create_cluster_takes_images_with_spark_3_5_to_4(tmp_path: Path, image: str | None,
                                                                  ok: bool) -> None:
    env, log = _fake_tool(tmp_path, "gcloud")
    env.update(CLUSTER="c1", REGION="europe-west1")
    env.pop("IMAGE_VERSION", None)
    if image:
        env["IMAGE_VERSION"] = image
    proc = subprocess.run([str(CONF / "dataproc" / "create-cluster.sh")], env=env, capture_output=True,
                          text=True)
    if not ok:
        assert proc.returncode == 2 and "Spark 3.5 to 4.3" in proc.stderr and not log.exists()
        return
    assert proc.returncode == 0, proc.stderr
    argv = json.loads(log.read_text())
    assert argv[:4] == ["dataproc", "clusters", "create", "c1"]
    assert f"--image-version={image or '2.2'}" in argv and "--region=europe-west1" in argv


def test_dockerfile_copies_existing_files_and_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    kinds = [k for k, _ in instructions]
    base = next(a for k, a in instructions if k == "FROM")
    m = re.match(r"python:(3\.\d+)-", base)
    assert m, base
    pyver = m.group(1)
    env = " ".join(a for k, a in instructions if k == "ENV")
    # SPARK_HOME is pip's pyspark inside the venv of the base image's Python.
    assert f"SPARK_HOME=/opt/venv/lib/python{pyver}/site-packages/pyspark" in env
    assert f"/opt/venv/lib/python{pyver}/site-packages/pyspark/bin" in env  # spark-class on PATH
    assert "SPARK_CONF_DIR=/opt/bams3/conf" in env
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for kind, args in instructions:
        if kind != "COPY":
            continue
        *sources, _dest = args.split()
        for src in sources:
            matches = list(ROOT.glob(src))
            assert matches, f"Dockerfile: COPY {src} matches nothing in the repository"
            # The ignore file excludes everything but what is copied.
            assert f"!{src}" in ignore or f"!{src}/**" in ignore, f"Dockerfile.dockerignore drops {src}"
    workdirs = [a for k, a in instructions if k == "WORKDIR"]
    assert workdirs[-1] == IMAGE_ROOT
    user = [a for k, a in instructions if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")
    apt = next(a for k, a in instructions if k == "RUN" and "apt-get install" in a)
    assert "openjdk-17-jre-headless" in apt
    entry = json.loads(next(a for k, a in instructions if k == "ENTRYPOINT"))
    assert Path(entry[0]).name in apt.split()  # tini comes from apt


def test_compose_services_are_consistent() -> None:
    doc = compose()
    services = doc["services"]
    assert {"minio", "spark-master", "demo"} <= set(services)
    worker_class = "org.apache.spark.deploy.worker.Worker"
    workers = [s for s in services.values() if worker_class in s.get("command", [])]
    assert len(workers) == 2
    for name, svc in services.items():
        if "build" in svc:
            context = (DOCKER / svc["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / svc["build"]["dockerfile"]).is_file(), name
        deps = svc.get("depends_on", [])
        assert set(deps) <= set(services), name
    master = services["spark-master"]["command"]
    assert master[:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    host, port = master[master.index("--host") + 1], master[master.index("--port") + 1]
    url = f"spark://{host}:{port}"
    assert host == "spark-master"
    for worker in workers:
        assert worker["command"][0] == "spark-class" and worker["command"][-1] == url
    demo = services["demo"]
    assert demo["environment"]["SPARK_MASTER"] == url
    # The one-shot service runs the script the native test runs, from the image's copy of the repo.
    (command,) = demo["command"]
    assert command.startswith(IMAGE_ROOT + "/")
    script = ROOT / command[len(IMAGE_ROOT) + 1:]
    assert script == DOCKER / "run-demo.sh" and script.stat().st_mode & stat.S_IXUSR
    assert run_demo_required_env() <= set(demo["environment"])
    # MinIO account = the credentials the driver and the workers use.
    minio = services["minio"]["environment"]
    for svc in (demo, *workers):
        assert svc["environment"]["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
        assert svc["environment"]["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    endpoint = demo["environment"]["AWS_ENDPOINT_URL"]
    assert re.fullmatch(r"http://minio:9000", endpoint)
    # Spark's writers put the coverage part files there from every executor: the directory must
    # be on one volume mounted by the driver and by every worker.
    results = demo["environment"]["RESULTS_DIR"]

    def volume_of(svc: dict[str, Any]) -> str | None:
        for v in svc.get("volumes", []):
            name, mount = v.split(":")[:2]
            if results == mount or results.startswith(mount.rstrip("/") + "/"):
                return str(name)
        return None

    shared = volume_of(demo)
    assert shared in doc.get("volumes", {}), "RESULTS_DIR is not on a named volume"
    assert all(volume_of(w) == shared for w in workers)


def test_compose_daemon_options_are_ones_spark_accepts() -> None:
    services = compose()["services"]
    commands = {tuple(s["command"]) for s in services.values() if s.get("command", [""])[0] == "spark-class"}
    classes = spark_classes()
    for cmd in sorted(commands):
        cls = cmd[1]
        assert cls.replace(".", "/") in classes, f"compose.yml: no class {cls} in Spark's jars"
        proc = subprocess.run([str(SPARK_HOME / "bin" / "spark-class"), cls, "--help"],
                              env=spark_env(), capture_output=True, text=True, timeout=120)
        usage = proc.stdout + proc.stderr
        assert "Usage:" in usage, usage[-2000:]
        for opt in (a for a in cmd[2:] if a.startswith("--")):
            assert re.search(rf"^\s+(?:-\w \w+, )?{re.escape(opt)} ", usage, flags=re.M), (
                f"compose.yml: {cls} has no option {opt}"
            )


def test_deploy_doc_commands_name_existing_files_and_accepted_arguments() -> None:
    from bams3_spark.cli import build_parser as bams3_parser

    text = DEPLOY_DOC.read_text()
    repo_paths = re.findall(r"(?<![\w/.$-])((?:conf|docker|jobs|examples|tools)/[\w./-]*\w)", text)
    for rel in sorted(set(repo_paths)):
        assert (ROOT / rel).exists(), f"deploy.md names {rel}, which does not exist"
    checked = 0
    for argv in doc_commands():
        where = f"deploy.md: {shlex.join(argv)[:120]}"
        for i, token in enumerate(argv):
            if re.search(r"(?:^|/)jobs/\w+\.py$", token) and (i == 0 or argv[i - 1] != "cp"):
                rest = argv[i + 1:]
                end = next((j for j, t in enumerate(rest) if t in {"|", "&&", ";", ">"}), len(rest))
                check_job_args(job_name(token, where), rest[:end], where)
                checked += 1
                break
            if token.endswith("conf/dataproc/submit.sh"):
                check_job_args(argv[i + 1], argv[i + 2:], where)
                checked += 1
                break
            if token == "bams3" and i == 0:
                try:
                    bams3_parser().parse_args(argv[1:])
                except SystemExit as exc:
                    pytest.fail(f"{where}: bams3 rejects these arguments (exit {exc.code})")
                checked += 1
                break
    assert checked >= 8, "deploy.md should show the exact commands of every deployment"


# ---------------------------------------------------------------------------------------------
# 4. The notebook (before the cluster tests: the module's cluster starts on first use)
# ---------------------------------------------------------------------------------------------


@pytest.mark.spark
@pytest.mark.slow
@needs_tools
def test_notebook_runs_headless_and_matches_samtools_and_mosdepth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    workdir = tmp_path / "cohort"
    region, window = "chr1:1000000-1500000", 20_000
    monkeypatch.delenv("BAMS3_COHORT", raising=False)
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    for key, value in {"BAMS3_WORKDIR": str(workdir), "BAMS3_REGION": region, "BAMS3_WINDOW": str(window),
                       "BAMS3_SIM_PAIRS": "2500", "SPARK_LOCAL_IP": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    # One extra cell reads the notebook's results back out of the kernel.
    nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_code_cell(
        "import json\nprint('RESULTS=' + json.dumps({'counts': region_counts.to_dict('records'), "
        "'windows': windows.to_dict('records'), 'samples': sorted(per_sample['sample'])}))"
    ))
    # The kernel is this venv's ipykernel ("python" in its spec means this interpreter):
    # nothing is installed into the user's Jupyter configuration.
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 1, "the plot cell should show one figure"
    texts = [o.text for c in nb.cells if c.cell_type == "code"
             for o in c.outputs if o.output_type == "stream"]
    line = next(t for t in texts if t.startswith("RESULTS="))
    results = json.loads(line.removeprefix("RESULTS=").strip())

    bams = {b.stem: b for b in sorted(workdir.glob("*.bam"))}
    assert results["samples"] == sorted(bams) and len(bams) == 3
    for row in results["counts"]:
        path = str(bams[row["sample"]])
        assert row["reads"] == int(samtools("view", "-c", path, region))
        assert row["mapq20_reads"] == int(samtools("view", "-c", "-q", "20", path, region))
    start, end = 1_000_000 - 1, 1_500_000
    for sample, bam in bams.items():
        expected = {k: v for k, v in mosdepth_windows(bam, window, tmp_path).items()
                    if k[0] == "chr1" and k[1] < end and k[1] + window > start}
        got = {("chr1", int(r["start"])): f"{r['mean_depth']:.2f}" for r in results["windows"]
               if r["sample"] == sample}
        assert got == expected, sample


# ---------------------------------------------------------------------------------------------
# 2. and 3. On a standalone cluster
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(standalone: tuple[str, Path]) -> tuple[str, Path]:
    """The session's standalone cluster (master + 2 workers, conftest.py): (URL, its directory)."""
    return standalone


def applications(cluster_dir: Path) -> set[str]:
    """Application ids that ran executors on the cluster's workers."""
    return {p.name for p in cluster_dir.glob("work*/app-*")}


def log4j_info_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO ", line)]


@pytest.mark.cluster
@pytest.mark.s3
@needs_tools
def test_compose_sequence_natively(cluster: tuple[str, Path], s3_server: str, tmp_path: Path) -> None:
    import boto3

    master, cluster_dir = cluster
    before = applications(cluster_dir)
    demo = compose()["services"]["demo"]["environment"]
    bucket = f"bams3-demo-{uuid.uuid4().hex[:8]}"
    results = tmp_path / "results"
    # The compose service's environment, with loopback stand-ins for its hosts.
    env = spark_env({
        **{k: str(v) for k, v in demo.items()},
        "SPARK_MASTER": master,
        "AWS_ENDPOINT_URL": s3_server,
        "BAMS3_BUCKET": bucket,
        "RESULTS_DIR": str(results),
        "WORK_DIR": str(tmp_path / "work"),
        "DEMO_PAIRS": "3000",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(SPARK_HOME / "bin"),
                                 os.environ["PATH"]]),
        "PYTHON": sys.executable,
    })
    env.pop("SPARK_CONF_DIR", None)  # the script sets it, as the image does
    proc = subprocess.run([str(DOCKER / "run-demo.sh")], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    # conf/log4j2.properties was in force: no Spark INFO chatter around the jobs' own lines.
    assert not log4j_info_lines(output), log4j_info_lines(output)[:5]
    assert f"s3://{bucket}/sample.bams3: OK" in proc.stdout
    # Both jobs ran on the cluster's executors (not in a local-mode driver).
    assert len(applications(cluster_dir) - before) == 2

    bam = tmp_path / "work" / "sample.bam"
    ds = open_dataset(f"s3://{bucket}/sample.bams3", endpoint_url=s3_server)
    assert ds.manifest.records == int(samtools("view", "-c", str(bam)))
    parts = sorted((results / "coverage").glob("sample=*/part-*"))
    assert parts and {p.parent.name for p in parts} == {f"sample={ds.sample}"}
    lines = [line for p in parts for line in p.read_text().splitlines()]
    assert lines == depth_lines_from_mosdepth(bam, tmp_path)

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.mark.cluster
@pytest.mark.slow
def test_make_dist_archive_runs_a_job_in_a_fresh_environment(
    cluster: tuple[str, Path], multi_bam: Path, tmp_path: Path
) -> None:
    from bams3_spark.convert import convert

    master, cluster_dir = cluster
    dist = tmp_path / "dist"
    venv = Path(sys.prefix)
    # -o: never reinstall the development venv from here, whatever pyproject.toml's mtime.
    proc = subprocess.run(
        ["make", "-C", str(ROOT), "-o", str(venv / ".installed"), "dist", f"DIST={dist}", f"VENV={venv}",
         "DIST_COMPRESS=1",
         f"PYTHON={sys._base_executable}"],  # type: ignore[attr-defined]  # the venv's own base Python
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (wheel,) = dist.glob(DIST_WHEEL_GLOB)
    requirements = (dist / DIST_REQUIREMENTS).read_text().split()
    assert requirements and not any(r.lower().startswith(("pyspark", "py4j")) for r in requirements)
    pins = dict(line.split("==") for line in (dist / DIST_CONSTRAINTS).read_text().split())
    assert pins["pyarrow"] == importlib.metadata.version("pyarrow")  # the versions tested here
    assert sorted(p.name for p in (dist / "jobs").glob("*.py")) == sorted(p.name for p in JOBS.glob("*.py"))
    with zipfile.ZipFile(wheel) as zf:
        assert "pyspark_bams3.py" in zf.namelist()  # pyspark's automatic data source lookup

    dataset = tmp_path / "multi.bams3"
    convert(str(multi_bam), str(dataset))
    # The edge node: a fresh directory holding only the unpacked archive, as documented for
    # client mode (the driver plans the bams3 scan with ./environment/bin/python too).
    edge = tmp_path / "edge"
    (edge / "environment").mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(dist / DIST_ARCHIVE), "-C", str(edge / "environment")], check=True)
    python = "./environment/bin/python"
    inherited = ("PYTHON", "VIRTUAL_ENV", "PYSPARK", "CONDA")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env = {**clean, "PATH": "/usr/bin:/bin", "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOCAL_HOSTNAME": "localhost", "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python,
           "SPARK_CONF_DIR": str(CONF)}
    probe = subprocess.run([python, "-c", "import bams3_spark, pyarrow, pysam; import pyspark"],
                           cwd=edge, env=env, capture_output=True, text=True)
    # The archive has the package and its libraries but no pyspark: the cluster's Spark provides it.
    assert "No module named 'pyspark'" in probe.stderr, probe.stderr

    before = applications(cluster_dir)
    region = "chr1:1-30000"
    out = tmp_path / "counts"
    submit = subprocess.run(
        [str(SPARK_HOME / "bin" / "spark-submit"), "--master", master,
         "--properties-file", str(CONF / "spark-defaults.conf"),
         "--archives", f"{dist / DIST_ARCHIVE}#environment",
         str(dist / "jobs" / "query.py"), str(dataset), "--region", region, "--count", "--format", "csv",
         "--out", str(out)],
        cwd=edge, env=env, capture_output=True, text=True, timeout=900,
    )
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-6000:]
    (new_app,) = applications(cluster_dir) - before
    # Every executor unpacked the archive in its working directory.
    unpacked = list(cluster_dir.glob(f"work*/{new_app}/*/environment/bin/python"))
    assert unpacked
    (csv,) = out.glob("part-*.csv")
    rows = csv.read_text().splitlines()
    assert rows[0] == "sample,count"
    sample, count = rows[1].split(",")
    assert sample == open_dataset(str(dataset)).sample
    assert int(count) == int(samtools("view", "-c", str(multi_bam), region)) > 0
