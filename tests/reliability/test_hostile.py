"""Hostile and random input: fuzzed regions, manifests and chunks fail only with
the package's own errors; decompression bombs, damaged datasets, concurrent
readers, killed (over)writes and secrets in messages."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bams3_spark import open_dataset
from bams3_spark.cli import main
from bams3_spark.convert import convert
from bams3_spark.exceptions import (
    Bams3Error,
    CorruptDatasetError,
    IncompleteDatasetError,
    NotADatasetError,
    RegionError,
    UnsupportedVersionError,
)
from bams3_spark.format import chunk as codec
from bams3_spark.format.manifest import Manifest
from bams3_spark.format.regions import parse_region
from bams3_spark.format.schema import RECORD_SCHEMA

LENGTHS = {"chr1": 10_000, "HLA-A*01:01": 300, "chr1:1-5": 50, "x": 1}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(
    st.text(alphabet=st.sampled_from(list("chr1:-,{}*HLA0123456789kKmM.eE+ x\t")), max_size=30)
    | st.text(max_size=30)
)
def test_fuzz_region_strings(text: str) -> None:
    try:
        region = parse_region(text, LENGTHS)
    except RegionError:
        return
    assert region.rname in LENGTHS or region.rname == "*"
    assert 0 <= region.start <= region.end <= max(LENGTHS.values())


@pytest.fixture(scope="module")
def small_dataset(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "ds.bams3"
    convert(str(multi_bam), str(out), chunk_size="256K")
    return out


def _json_values() -> st.SearchStrategy[object]:
    leaves = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
    return st.recursive(
        leaves,
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
        max_leaves=20,
    )


@FUZZ
@given(data=st.data())
def test_fuzz_manifest_mutations(small_dataset: Path, data: st.DataObject) -> None:
    doc = json.loads((small_dataset / "bams3.json").read_bytes())
    # Replace one field somewhere in the document with an arbitrary JSON value.
    target = doc
    path = data.draw(st.lists(st.integers(0, 50), min_size=1, max_size=4))
    for step in path[:-1]:
        if isinstance(target, dict) and target:
            target = target[sorted(target)[step % len(target)]]
        elif isinstance(target, list) and target:
            target = target[step % len(target)]
    value = data.draw(_json_values())
    if isinstance(target, dict) and target:
        target[sorted(target)[path[-1] % len(target)]] = value
    elif isinstance(target, list) and target:
        target[path[-1] % len(target)] = value
    try:
        Manifest.loads(json.dumps(doc).encode(), "fuzz://bams3.json")
    except (CorruptDatasetError, UnsupportedVersionError):
        pass


@FUZZ
@given(raw=st.binary(max_size=400))
def test_fuzz_manifest_bytes(raw: bytes) -> None:
    try:
        Manifest.loads(raw, "fuzz://bams3.json")
    except (CorruptDatasetError, UnsupportedVersionError):
        pass


_CHUNK: list[bytes] = []


@pytest.fixture(scope="module")
def chunk_sample(small_dataset: Path) -> None:
    """Load one valid chunk once (kept out of hypothesis' arguments: it prints them)."""
    _CHUNK.append(sorted((small_dataset / "data").rglob("*.chunk"))[0].read_bytes())


@pytest.mark.usefixtures("chunk_sample")
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_chunk_mutations(data: st.DataObject) -> None:
    chunk_bytes = _CHUNK[0]
    raw = bytearray(chunk_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i : i + data.draw(st.integers(1, 64))]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    columns = data.draw(st.sampled_from([None, ["pos", "end"], ["cigar", "flag"]]))
    try:
        # Without the checksum, the decoder itself must catch the damage or return
        # well-typed records; with it, any change is caught.
        table = codec.decode_chunk(bytes(raw), "fuzz://chunk", columns)
        assert table.schema.equals(pa.schema([RECORD_SCHEMA.field(c) for c in table.column_names]))
    except Bams3Error:
        pass
    if bytes(raw) != chunk_bytes:
        with pytest.raises(Bams3Error):
            codec.decode_chunk(bytes(raw), "fuzz://chunk", expected_sha256=codec.sha256_hex(chunk_bytes))


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = RECORD_SCHEMA.empty_table().to_pylist()
    row = {f.name: (0 if pa.types.is_integer(f.type) else "*") for f in RECORD_SCHEMA}
    row["seq"] = "A" * (200 << 20)
    bomb = pa.Table.from_pylist([row], schema=RECORD_SCHEMA).replace_schema_metadata(
        {b"bams3.format_version": b"1.0"}
    )
    buf = io.BytesIO()
    pq.write_table(bomb, buf, compression="zstd")
    raw = buf.getvalue()
    assert len(raw) < 1 << 20  # 200 MiB of sequence compresses to almost nothing
    with pytest.raises(CorruptDatasetError, match="decompression bomb"):
        codec.decode_chunk(raw, "bomb://chunk")


def test_damaged_datasets_fail_with_one_line(small_dataset: Path, tmp_path: Path) -> None:
    import shutil

    cases = {
        "manifest-json": lambda d: (d / "bams3.json").write_text("{not json"),
        "newer-version": lambda d: _edit_manifest(d, format_version="9.0"),
        "escape-path": lambda d: _edit_index(d, path="data/../../../../etc/passwd"),
        "huge-count": lambda d: _edit_index(d, records=2**60),
        "truncated-chunk": lambda d: _truncate(next((d / "data").rglob("*.chunk"))),
        "header-swapped": lambda d: (d / "header.sam").write_text("@HD\tVN:1.6\n"),
        "missing-index": lambda d: next((d / "index").glob("*.json")).unlink(),
    }
    for name, damage in cases.items():
        ds = tmp_path / name
        shutil.copytree(small_dataset, ds)
        damage(ds)
        err = io.StringIO()
        rc = _run_cli(["validate", str(ds)], err)
        assert rc == 1, name
        text = err.getvalue().strip()
        assert text and "Traceback" not in text, name


def _run_cli(args: list[str], err: io.StringIO) -> int:
    import contextlib

    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        return main(args)


def _edit_manifest(d: Path, **fields: object) -> None:
    doc = json.loads((d / "bams3.json").read_text())
    doc.update(fields)
    (d / "bams3.json").write_text(json.dumps(doc))


def _edit_index(d: Path, **fields: object) -> None:
    index = sorted((d / "index").glob("*.json"))[0]
    doc = json.loads(index.read_text())
    doc["chunks"][0].update(fields)
    index.write_text(json.dumps(doc))


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _big_bam(tmp_path: Path) -> Path:
    from tests.test_convert import _big_bam as make

    return make(tmp_path, reads=120_000)


def test_readers_during_conversion_see_nothing_or_everything(tmp_path: Path) -> None:
    bam = _big_bam(tmp_path)
    out = tmp_path / "live.bams3"
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                ds = open_dataset(str(out))
            except (NotADatasetError, IncompleteDatasetError):
                seen.append("absent")
                continue
            total = sum(t.num_rows for t in ds.iter_tables(columns=["pos"]))
            seen.append("complete" if total == ds.manifest.records == 120_000 else f"partial {total}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        convert(str(bam), str(out), chunk_size="256K", workers=2)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert "absent" in seen and "complete" in seen
    assert set(seen) == {"absent", "complete"}, sorted(set(seen))


@pytest.mark.parametrize("delay", [0.2, 0.6, 1.2, 2.0])
def test_killed_overwrite_never_mixes_old_and_new(tmp_path: Path, delay: float) -> None:
    bam = _big_bam(tmp_path)
    out = tmp_path / "ds.bams3"
    convert(str(bam), str(out), chunk_size="1M")
    old = open_dataset(str(out)).manifest
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bams3_spark",
            "convert",
            "--quiet",
            "--overwrite",
            "--chunk-size",
            "256K",
            str(bam),
            str(out),
        ],
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        ds = open_dataset(str(out))
    except (IncompleteDatasetError, NotADatasetError):
        return  # killed before the new manifest: readers see no dataset
    # Either the old dataset survived untouched (killed before anything changed)
    # or the new one is complete; every chunk verifies against its index either way.
    assert ds.manifest.chunk_size in (old.chunk_size, 256 * 1024)
    assert ds.validate() == []
    assert ds.manifest.records == 120_000


def test_secrets_never_appear_in_errors(multi_bam: Path, s3_server: str, s3_bucket: str) -> None:
    secret = "FAKE-SECRET-KEY-never-print-me-123"
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": secret, "AWS_ACCESS_KEY_ID": "AKIAFAKEKEY"}
    url = f"s3://{s3_bucket}/secret.bams3"
    runs = [
        (1, ["convert", "--s3-endpoint", s3_server, str(multi_bam), "s3://no-such-bucket-secret/x"]),
        (1, ["info", "--s3-endpoint", s3_server, "s3://no-such-bucket-secret/x"]),
        (1, ["--debug", "info", "--s3-endpoint", s3_server, "s3://no-such-bucket-secret/x"]),
        # Succeeding commands, their plans and statistics (moto accepts any key).
        (0, ["convert", "--s3-endpoint", s3_server, "--chunk-size", "1M", str(multi_bam), url]),
        (0, ["info", "--s3-endpoint", s3_server, url]),
        (0, ["query", "--explain", "--s3-endpoint", s3_server, url, "chr1", "chr2:1-1000"]),
        (0, ["query", "--explain", "--count", "--s3-endpoint", s3_server, url, "chr1"]),
        (0, ["query", "--stats", "--count", "--s3-endpoint", s3_server, url, "chr1:1-500000"]),
        (1, ["query", "--explain", "--s3-endpoint", s3_server, url, "chrNope"]),
    ]
    for status, args in runs:
        proc = subprocess.run(
            [sys.executable, "-m", "bams3_spark", *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == status, proc.stderr
        assert secret not in proc.stderr + proc.stdout
        if "--explain" in args and status == 0:
            assert "query plan for s3://" in proc.stdout
    with pytest.raises((Bams3Error, OSError)) as err:
        open_dataset("s3://no-such-bucket-secret/x", endpoint_url=s3_server, key="AKIAFAKEKEY", secret=secret)
    assert secret not in str(err.value) and secret not in repr(err.value)
