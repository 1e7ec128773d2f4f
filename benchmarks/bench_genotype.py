"""Genotyping at known sites: ``bams3 genotype`` against ``samtools mpileup -B -l`` on the same data.

1. **SNP sites on one sample.** ``--sites`` single-base sites spread evenly over
   the references with reads: ``bams3 genotype DATASET --sites sites.bed -o
   out.tsv`` against ``samtools mpileup -B -l sites.bed BAM`` (best of
   ``--repeat``), and the bytes the engine fetched against the bytes of the
   chunk objects it touched (it reads only the counting's columns).
   Then a what-if for the 10% target: the touched chunks re-encoded with
   row groups of R rows (the FORMAT's chunks are one row group, and pyarrow
   can skip row groups but not pages), and the bytes a reader would fetch
   (footer plus the counting's columns of the row groups holding a read over
   a site) against the re-encoded objects, with the size they would add.
2. **A cohort of hard-linked samples.** ``--cohort`` copies of the dataset made
   of hard links, named by a sample sheet: ``jobs/genotype.py`` in
   ``local[2]`` against a loop of the local engine over the samples in one
   process.

Usage: ``python bench_genotype.py DATASET BAM OUTDIR [--sites 1000] [--cohort 100] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import bams3_cmd, table, timed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def make_sites(dataset: str, n: int, out: Path) -> Path:
    """``n`` single-base BED sites evenly spread over the references holding reads (header order)."""
    from bams3_spark import open_dataset

    ds = open_dataset(dataset)
    refs = [(e.name, e.length) for e in ds.manifest.references if e.records and e.name != "*"]
    total = sum(length for _, length in refs)
    lines = []
    for name, length in refs:
        k = max(1, round(n * length / total))
        step = length // (k + 1)
        lines += [f"{name}\t{step * (i + 1)}\t{step * (i + 1) + 1}\n" for i in range(k) if step > 0]
    out.write_text("".join(lines[:n]))
    return out


def fetched_fraction(dataset: str, sites: Path) -> tuple[int, int, int]:
    """(chunk objects touched, their bytes, bytes fetched) of one genotyping run, in this process."""
    from bams3_spark.dataset.reader import DatasetReader
    from bams3_spark.genotype.engine import iter_sample_counts, load_sites, plan_units
    from bams3_spark.genotype.options import GenotypeOptions
    from bams3_spark.io.storage import CountingStorage

    ds = DatasetReader.open(dataset)
    counting = CountingStorage(ds.storage)
    ds.storage = counting
    st = load_sites(str(sites), {})
    units = plan_units(ds, st)
    touched = {c.path: c.bytes for u in units for c in u.chunks}
    for _ in iter_sample_counts([ds], st, GenotypeOptions()):
        pass
    return len(touched), sum(touched.values()), counting.data_bytes


#: Row-group sizes of the what-if (rows); 0 is today's one row group per chunk.
WHAT_IF_ROWS = (0, 8192, 2048, 512, 256)


def row_group_what_if(dataset: str, sites: Path) -> list[tuple[int, int, int, int]]:
    """(rows per group, re-encoded bytes, fetched bytes, today's bytes) over the touched chunks.

    A row is needed when its read covers a site (``pos - 1 <= site < end``,
    the reads the counting can use); a reader that skips row groups fetches
    the footer and the needed groups' column chunks of the counting's columns.
    """
    import io

    import numpy as np
    import pyarrow.parquet as pq

    from bams3_spark.dataset.chunks import ChunkRef
    from bams3_spark.dataset.reader import DatasetReader
    from bams3_spark.format.chunk import COLUMN_ENCODINGS, DICTIONARY_COLUMNS, ZSTD_LEVEL
    from bams3_spark.genotype.engine import load_sites, plan_units
    from bams3_spark.genotype.options import GenotypeOptions

    ds = DatasetReader.open(dataset)
    st = load_sites(str(sites), {})
    needed_columns = set(GenotypeOptions().columns)
    touched = {(u.rname, c.path): c for u in plan_units(ds, st) for c in u.chunks}
    totals = {rows: [0, 0, 0] for rows in WHAT_IF_ROWS}
    for (rname, _), info in touched.items():
        table = ChunkRef(ds.storage, rname, info).read()
        lo, hi = next(g for c, g in zip(st.chroms, st.groups, strict=True) if c == rname)
        pos = np.sort(st.pos[lo:hi])
        starts = table.column("pos").to_numpy().astype(np.int64) - 1
        ends = table.column("end").to_numpy().astype(np.int64)
        first = np.searchsorted(pos, starts, side="left")  # first site at or after the read's start
        ok = first < len(pos)
        need = np.zeros(len(starts), dtype=bool)
        need[ok] = pos[first[ok]] < ends[ok]
        for rows in WHAT_IF_ROWS:
            sink = io.BytesIO()
            pq.write_table(table, sink, compression="zstd", compression_level=ZSTD_LEVEL,
                           use_dictionary=DICTIONARY_COLUMNS, column_encoding=COLUMN_ENCODINGS,
                           write_statistics=["pos", "end", "flag", "mapq"], write_page_checksum=True,
                           row_group_size=rows or max(1, table.num_rows), data_page_size=1 << 20)
            meta = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata
            groups = np.unique(np.flatnonzero(need) // (rows or max(1, table.num_rows)))
            fetched = meta.serialized_size + 8
            for g in groups.tolist():
                rg = meta.row_group(g)
                fetched += sum(rg.column(i).total_compressed_size for i in range(rg.num_columns)
                               if rg.column(i).path_in_schema in needed_columns)
            totals[rows][0] += len(sink.getvalue())
            totals[rows][1] += fetched
            totals[rows][2] += info.bytes
    return [(rows, *totals[rows]) for rows in WHAT_IF_ROWS]


def make_cohort(dataset: Path, n: int, out: Path) -> Path:
    """``n`` hard-linked copies of a dataset and a sample sheet naming them; returns the sheet."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        dest = out / f"s{i:04d}.bams3"
        if not dest.exists():
            for src in dataset.rglob("*"):
                target = dest / src.relative_to(dataset)
                if src.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(src, target)
        rows.append(f"S{i:04d}\t{dest}\n")
    sheet = out / "samples.tsv"
    sheet.write_text("".join(rows))
    return sheet


_LOOP = """
import sys
from bams3_spark.genotype.engine import genotype_table
from bams3_spark.genotype.engine import load_sites
sites = load_sites(sys.argv[1], {})
for path in sys.argv[2:]:
    genotype_table(path, sites)
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dataset")
    p.add_argument("bam")
    p.add_argument("out")
    p.add_argument("--sites", type=int, default=1000)
    p.add_argument("--cohort", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sites = make_sites(args.dataset, args.sites, out / "sites.bed")
    n_sites = len(sites.read_text().splitlines())

    ours = timed(bams3_cmd("genotype", args.dataset, "--sites", str(sites), "-o", str(out / "g.tsv"),
                           "--quiet"), args.repeat)
    ours_auto = timed(bams3_cmd("genotype", args.dataset, "--sites", str(sites), "-o", str(out / "g.tsv"),
                                "--quiet", "-t", "auto"), args.repeat)
    theirs = timed(["samtools", "mpileup", "-B", "-l", str(sites), "-o", str(out / "m.txt"), args.bam],
                   args.repeat)
    n_chunks, touched, fetched = fetched_fraction(args.dataset, sites)
    rows = [
        ("`bams3 genotype` (TSV)", f"{ours:.2f}", f"{theirs / ours:.2f}x"),
        ("`bams3 genotype -t auto` (one worker per core)", f"{ours_auto:.2f}", f"{theirs / ours_auto:.2f}x"),
        ("`samtools mpileup -B -l sites.bed`", f"{theirs:.2f}", "1.00x"),
    ]
    print(table(f"Genotyping {n_sites:,} SNP sites, one sample (best of {args.repeat})", rows,
                ("command", "seconds", "speed vs samtools")))
    share = f"{100 * fetched / max(1, touched):.0f}%"
    print(table("Bytes fetched by `bams3 genotype`", [(
        f"{n_chunks:,}", f"{touched / 1e6:.1f} MB", f"{fetched / 1e6:.1f} MB", share,
    )], ("chunk objects touched", "their bytes", "bytes fetched", "fetched / touched")))
    from bams3_spark import open_dataset

    ds_bytes = sum(e.bytes for e in open_dataset(args.dataset).manifest.references)
    bam_bytes = os.path.getsize(args.bam)
    what_if = []
    for rows, encoded, got, today in row_group_what_if(args.dataset, sites):
        growth = encoded / max(1, today)
        what_if.append((
            "one per chunk (FORMAT 1.1)" if rows == 0 else f"{rows:,} rows",
            f"{encoded / 1e6:.1f} MB ({100 * (growth - 1):+.1f}%)", f"{got / 1e6:.1f} MB",
            f"{100 * got / max(1, encoded):.0f}%", f"{ds_bytes * growth / bam_bytes:.3f}",
        ))
    print(table("What-if: the touched chunks re-encoded with smaller row groups, read by row group",
                what_if, ("row groups", "touched chunks' bytes", "would fetch", "fetched / touched",
                          "dataset size vs BAM")))

    if args.cohort > 0:
        sheet = make_cohort(Path(args.dataset), args.cohort, out / "cohort")
        paths = [line.split("\t")[1].strip() for line in sheet.read_text().splitlines()]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _LOOP, str(sites), *paths], check=True)
        loop = time.perf_counter() - t0
        job_out = out / "cohort-out"
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, str(ROOT / "jobs" / "genotype.py"), "--manifest", str(sheet),
             "--sites", str(sites), "--out", str(job_out), "--overwrite", "--master", "local[2]"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        job = time.perf_counter() - t0
        print(table(f"Cohort of {args.cohort} hard-linked samples, {n_sites:,} sites", [
            ("local engine, looped over the samples in one process", f"{loop:.1f}", "1.00x"),
            ("`jobs/genotype.py` in local[2] (Parquet by sample)", f"{job:.1f}", f"{job / loop:.2f}x"),
        ], ("run", "seconds", "time vs loop")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
