# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
DEMO    = demo-data

.PHONY: venv demo test test-fast test-compat lint typecheck bench dist readme clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Simulates a sample, converts and queries it, and runs the coverage locally and as a Spark job
# (local mode); about 2 minutes on 2 cores once the venv exists.
demo: $(STAMP)
	$(PY) -m bams3_spark.demo $(DEMO)

# Two pytest-xdist workers, whole test files each (module fixtures are built once): much of the
# suite waits on JVMs, subprocesses and loopback servers. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
TEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(TEST_PARALLEL) tests

# The compatibility module (tests/compat) on the older Spark releases users run: pyspark 3.5
# (EMR 7.x, Dataproc 2.2/2.3) and 4.0 (EMR 8.0, Dataproc 3.0), each in its own venv
# (.venv-pyspark-X, built once); the dev venv runs it with the newest pyspark in `make test`.
COMPAT_PYSPARK ?= 3.5.6 4.0.2
COMPAT_VENVS = $(foreach v,$(COMPAT_PYSPARK),.venv-pyspark-$(v)/.installed)

.venv-pyspark-%/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-pyspark-$*
	.venv-pyspark-$*/bin/python -m pip install -q --upgrade pip
	.venv-pyspark-$*/bin/python -m pip install -q -e . pytest pyspark==$*
	touch $@

test-compat: $(COMPAT_VENVS)
	set -e; for v in $(COMPAT_PYSPARK); do \
		echo "== tests/compat with pyspark $$v"; \
		.venv-pyspark-$$v/bin/python -m pytest -q -p no:cacheprovider tests/compat; \
	done

test-fast: $(STAMP)
	$(PY) -m pytest -q $(TEST_PARALLEL) -m 'not cluster and not slow' tests

lint: $(STAMP)
	$(VENV)/bin/ruff check bams3_spark jobs tests benchmarks tools docker
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/run.py

# `make dist`: what clusters need (docs/sections/deploy.md):
#   $(DIST)/bams3_spark-*.whl          the package (pip install on nodes, e.g. conf/emr/bootstrap.sh)
#   $(DIST)/requirements-runtime.txt   its dependencies except pyspark (the cluster's Spark has it)
#   $(DIST)/constraints.txt            the versions of this venv (tested), pinned for every install
#                                      (also spares pip minutes of backtracking through boto3 releases)
#   $(DIST)/env.tar.gz                 a venv-pack archive of both, for
#       spark-submit --archives $(DIST)/env.tar.gz#environment \
#                    --conf spark.pyspark.python=./environment/bin/python ...
#     (with PYSPARK_PYTHON=./environment/bin/python). venv-pack does not copy Python itself:
#     build it with the Python the nodes have at the same path (make dist PYTHON=/usr/bin/python3.11).
#   $(DIST)/jobs/*.py                  the job scripts to upload next to them
# DIST_EXTRAS adds packages to the archive, e.g. gcsfs for gs:// datasets on Dataproc.
# Platform recipes (docs/sections/deploy.md, "Platforms"; pyspark comes from the cluster, 3.5-4.3):
#   EMR 7.x (emr-7.13.0, Spark 3.5.6), EMR 8.0 (emr-spark-8.0.0, Spark 4.0.2):
#       make dist; aws s3 sync dist/ s3://BUCKET/bams3/dist/ --exclude env.tar.gz
#       conf/emr/bootstrap.sh builds /opt/bams3/venv with python3.11 (EMR 7.x's python3 is 3.9)
#   Dataproc 2.2/2.3 (Spark 3.5), 3.0 (Spark 4.0), on a cluster node (the archive links its python):
#       make dist PYTHON="$$(command -v python3)" DIST_EXTRAS=gcsfs; then conf/dataproc/submit.sh
DIST ?= dist
DIST_EXTRAS ?=
# gzip level of env.tar.gz (venv-pack's default is 4; 1 packs several times faster, a little larger).
DIST_COMPRESS ?= 4
dist: $(STAMP)
	rm -rf $(DIST)/env $(DIST)/env.tar.gz $(DIST)/bams3_spark-*.whl $(DIST)/requirements-runtime.txt \
		$(DIST)/constraints.txt $(DIST)/jobs
	$(PY) -m build --wheel --outdir $(DIST) .
	rm -rf build
	$(PY) tools/runtime_requirements.py $(DIST)/bams3_spark-*.whl > $(DIST)/requirements-runtime.txt
	$(PY) -m pip freeze --exclude-editable | grep -v ' @ ' > $(DIST)/constraints.txt
	$(PYTHON) -m venv $(DIST)/env
	$(DIST)/env/bin/python -m pip install -q -r $(DIST)/requirements-runtime.txt -c $(DIST)/constraints.txt \
		$(DIST_EXTRAS)
	$(DIST)/env/bin/python -m pip install -q --no-deps $(DIST)/bams3_spark-*.whl
	$(VENV)/bin/venv-pack -q --compress-level $(DIST_COMPRESS) -p $(DIST)/env -o $(DIST)/env.tar.gz
	rm -rf $(DIST)/env
	mkdir -p $(DIST)/jobs && cp jobs/*.py $(DIST)/jobs/

# README.md is assembled from the per-feature guides in docs/sections (edit those).
SECTIONS = 00_intro convert query spark spark_convert coverage genotype workflows deploy 80_performance 85_architecture 90_reference
readme:
	for s in $(SECTIONS); do cat docs/sections/$$s.md; echo; done > README.md

clean:
	rm -rf $(VENV) .venv-pyspark-* $(DEMO) build dist *.egg-info
