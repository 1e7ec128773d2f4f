"""Benchmark `bams3 query` against `samtools view` on the same data, in the same run.

Measures (issue 3):

1. Cold-process ``bams3 query DATASET REGION --count`` of a 1 Mbp region
   against ``samtools view -c BAM REGION`` on the indexed BAM (median of N runs).
2. Bytes read by ``--count`` as a fraction of the bytes of the chunk objects
   the query selects (counted by a storage wrapper: every request and byte).
3. 100 random 1 Mbp regions against an S3 endpoint (moto on loopback) with
   50 ms added to every request by a proxy on loopback: ``--parallel 16``
   against ``--parallel 1``, for ``--count`` and for SAM output.

Usage::

    python benchmarks/bench_query.py --bam /work/bench-data/bench.bam --dataset bench.bams3

The dataset is converted from the BAM (1 Mbp windows) if it does not exist.
Prints a Markdown table and exits 0; every bams3 answer is checked against
samtools first.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bams3_spark import open_dataset
from bams3_spark.io.storage import CountingStorage
from bams3_spark.query import Query, plan_query, write_sam

WINDOW = 1_000_000
ENV = {
    **os.environ,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
ENV.pop("AWS_PROFILE", None)


def bams3_command() -> list[str]:
    """The installed `bams3` console script next to this interpreter (a real cold start)."""
    script = Path(sys.executable).with_name("bams3")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bams3_spark"]


def timed(cmd: list[str], stdout: int | None = subprocess.PIPE) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, env=ENV, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}...: exit {proc.returncode}: {proc.stderr.decode().strip()}")
    return elapsed, proc.stdout or b""


def random_regions(refs: list[tuple[str, int]], n: int, seed: int) -> list[str]:
    """``n`` random 1 Mbp regions, on references at least that long, weighted by length."""
    rng = random.Random(seed)
    big = [(name, length) for name, length in refs if length > WINDOW]
    out = []
    for _ in range(n):
        name, length = rng.choices(big, weights=[ln for _, ln in big])[0]
        start = rng.randint(1, length - WINDOW + 1)
        out.append(f"{name}:{start}-{start + WINDOW - 1}")
    return out


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bam", required=True, help="coordinate-sorted, indexed BAM (samtools reads it)")
    ap.add_argument("--dataset", required=True, help="BAMS3 dataset of the same BAM (converted if missing)")
    ap.add_argument(
        "--regions", type=int, default=100, help="random 1 Mbp regions for the S3 test (default 100)"
    )
    ap.add_argument("--delay", type=float, default=0.05, help="seconds added per S3 request (default 0.05)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each cold-process command (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if shutil.which("samtools") is None:
        raise SystemExit("samtools is needed as the reference")
    bams3 = bams3_command()

    if not Path(args.dataset, "bams3.json").exists():
        print(f"converting {args.bam} -> {args.dataset} ...", file=sys.stderr)
        timed([*bams3, "convert", args.bam, args.dataset, "--workers", "auto", "--quiet", "--overwrite"])
    ds = open_dataset(args.dataset)
    regions = random_regions(ds.references, args.regions, args.seed)
    region = regions[0]
    rows: list[tuple[str, str, str, str]] = []

    # 1. Cold-process count of one 1 Mbp region.
    ours, theirs = [], []
    for _ in range(args.repeat):
        t, out = timed([*bams3, "query", args.dataset, region, "--count"])
        ours.append(t)
        t, ref = timed(["samtools", "view", "-c", args.bam, region])
        theirs.append(t)
        if out != ref:
            raise SystemExit(f"count mismatch for {region}: bams3 {out!r}, samtools {ref!r}")
    mine, base = statistics.median(ours), statistics.median(theirs)
    rows.append(
        (
            f"cold `query --count` of 1 Mbp (`{region}`, {int(out)} records), median of {args.repeat}",
            fmt_s(mine),
            fmt_s(base),
            f"{mine / base:.1f}x",
        )
    )

    # The floor for any Python reader of Parquet: starting Python and importing pyarrow and fsspec.
    floor = statistics.median(
        timed([sys.executable, "-c", "import pyarrow.parquet, fsspec"])[0] for _ in range(args.repeat)
    )
    rows.append(
        (
            "reference: cold `python -c 'import pyarrow.parquet, fsspec'`",
            fmt_s(floor),
            fmt_s(base),
            f"{floor / base:.1f}x",
        )
    )

    # 2. Bytes read by --count, one region and all regions.
    for label, regs in ((f"1 region (`{region}`)", [region]), (f"{len(regions)} regions", regions)):
        plan = plan_query(ds, regs)
        counting = CountingStorage(ds.storage)
        n = Query(plan, storage=counting).count(16)
        selected = sum({t.chunk.info.path: t.chunk.info.bytes for t in plan.tasks}.values())
        whole = sum(1 for t in plan.tasks if t.whole)
        oracle = int(
            subprocess.run(
                ["samtools", "view", "-c", args.bam, *regs], capture_output=True, check=True
            ).stdout
        )
        if n != oracle:
            raise SystemExit(f"count mismatch for {label}: bams3 {n}, samtools {oracle}")
        rows.append(
            (
                f"bytes read by `--count`, {label}: {counting.data_requests} requests, "
                f"{whole} of {len(plan.tasks)} chunk reads answered by the index",
                f"{counting.data_bytes:,} of {selected:,} B = {100 * counting.data_bytes / selected:.2f}%",
                "",
                "",
            )
        )

    # 3. S3 with added latency: --parallel 16 vs --parallel 1.
    rows.extend(s3_rows(args, bams3, regions))

    print(
        f"\n### `bams3 query` vs `samtools view` ({ds.manifest.records:,} records, "
        f"{ds.manifest.chunk_count} chunks, {ds.manifest.chunk_bytes / 1e6:,.0f} MB)\n"
    )
    print("| measurement | bams3 | samtools / baseline | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


_MOTO = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("http://%s:%d" % server.get_host_and_port(), flush=True)
sys.stdin.read()
server.stop()
"""


def _serve(cmd: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server process that prints its endpoint and runs until its stdin closes."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV
    )
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    if not endpoint.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"{cmd[:3]}: did not start")
    return proc, endpoint


def _stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _proxy_stats(endpoint: str, reset: bool = False) -> dict[str, int]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}/__stats__{'?reset' if reset else ''}", timeout=30) as resp:
        stats: dict[str, int] = json.loads(resp.read())
    return stats


def _warm_count(url: str, endpoint: str, regions: list[str], workers: int, expected: bytes) -> float:
    t0 = time.perf_counter()
    n = Query(plan_query(open_dataset(url, endpoint_url=endpoint), regions, workers=workers)).count(workers)
    elapsed = time.perf_counter() - t0
    if f"{n}\n".encode() != expected:
        raise SystemExit(f"S3 count differs from samtools ({workers} workers)")
    return elapsed


def s3_rows(
    args: argparse.Namespace, bams3: list[str], regions: list[str]
) -> list[tuple[str, str, str, str]]:
    """S3 with added latency. moto and the proxy run in their own processes, so
    their CPU work does not compete with the client for one interpreter lock."""
    import boto3
    import fsspec

    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    rows = []
    moto_proc, moto = _serve([sys.executable, "-c", _MOTO])
    proxy_proc = None
    try:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(Bucket=bucket)
        print(f"uploading {args.dataset} to the moto server ...", file=sys.stderr)
        fs = fsspec.filesystem("s3", endpoint_url=moto, skip_instance_cache=True)
        fs.put(args.dataset.rstrip("/"), f"{bucket}/bench.bams3", recursive=True)
        url = f"s3://{bucket}/bench.bams3"
        expected = subprocess.run(
            ["samtools", "view", "-c", args.bam, *regions], capture_output=True, check=True
        ).stdout
        some = regions[: max(1, len(regions) // 10)]
        expected_sam = subprocess.run(
            ["samtools", "view", args.bam, *some], capture_output=True, check=True
        ).stdout
        proxy_script = str(Path(__file__).resolve().parent / "latency_proxy.py")
        proxy_proc, endpoint = _serve([sys.executable, proxy_script, moto, str(args.delay)])
        # The same proxy without delay: what the loopback testbed itself costs
        # (moto spends tens of ms of Python CPU per request on shared cores).
        base_proc, base_endpoint = _serve([sys.executable, proxy_script, moto, "0"])
        try:
            base = {p: _warm_count(url, base_endpoint, regions, p, expected) for p in (1, 16)}
        finally:
            _stop(base_proc)
        for what, regs, extra in (("--count", regions, ["--count"]), ("SAM output", some, [])):
            wanted = expected if extra else expected_sam
            label = f"{len(regs)} random 1 Mbp region{'s' if len(regs) > 1 else ''}, {what}"
            # Cold processes: the whole CLI, imports and S3 client set-up included.
            cold = {}
            for parallel in (1, 16):
                before = _proxy_stats(endpoint, reset=True)["requests"]
                t, out = timed(
                    [
                        *bams3,
                        "query",
                        url,
                        *regs,
                        *extra,
                        "--parallel",
                        str(parallel),
                        "--s3-endpoint",
                        endpoint,
                    ]
                )
                if out != wanted:
                    raise SystemExit(f"S3 {what} output differs from samtools (--parallel {parallel})")
                cold[parallel] = (t, _proxy_stats(endpoint)["requests"] - before)
            # In one process: open, plan and run, with imports already done.
            warm = {}
            for parallel in (1, 16):
                _proxy_stats(endpoint, reset=True)
                t0 = time.perf_counter()
                ds = open_dataset(url, endpoint_url=endpoint)
                query = Query(plan_query(ds, regs, workers=parallel))
                if extra:
                    got = f"{query.count(parallel)}\n".encode()
                else:
                    buf = io.BytesIO()
                    write_sam(buf, query.tables(parallel), None)
                    got = buf.getvalue()
                warm[parallel] = (time.perf_counter() - t0, _proxy_stats(endpoint)["max_inflight"])
                if got != wanted:
                    raise SystemExit(f"S3 {what} result differs from samtools (workers {parallel})")
            (t1, r1), (t16, _) = cold[1], cold[16]
            rows.append(
                (
                    f"S3 +{args.delay * 1000:.0f} ms/request, {label}, cold CLI: `--parallel 16` vs "
                    f"`--parallel 1` ({r1} requests)",
                    fmt_s(t16),
                    fmt_s(t1),
                    f"{t1 / t16:.1f}x faster",
                )
            )
            (w1, _), (w16, inflight) = warm[1], warm[16]
            rows.append(
                (
                    f"S3 +{args.delay * 1000:.0f} ms/request, {label}, in-process: 16 workers "
                    f"(up to {inflight} requests in flight) vs 1",
                    fmt_s(w16),
                    fmt_s(w1),
                    f"{w1 / w16:.1f}x faster",
                )
            )
            if extra:
                rows.append(
                    (
                        f"same, no added delay (testbed cost: moto's CPU): 16 workers vs 1; the "
                        f"{args.delay * 1000:.0f} ms/request added {w1 - base[1]:.1f} s to 1 worker and "
                        f"{w16 - base[16]:.1f} s to 16",
                        fmt_s(base[16]),
                        fmt_s(base[1]),
                        f"{(w1 - base[1]) / (w16 - base[16]):.1f}x less added time"
                        if w16 - base[16] > 0.05
                        else "added time not measurable at 16",
                    )
                )
    finally:
        if proxy_proc is not None:
            _stop(proxy_proc)
        _stop(moto_proc)
    return rows


if __name__ == "__main__":
    sys.exit(main())
