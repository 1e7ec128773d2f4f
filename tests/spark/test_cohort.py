"""Cohort inputs and unit planning (bams3_spark.spark.cohort): no Spark needed."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from bams3_spark.exceptions import DatasetError, InvalidArgumentError, NotADatasetError
from bams3_spark.spark.cohort import (
    Cohort,
    CohortSample,
    RefTotals,
    SheetRow,
    bundle,
    check_file_names,
    parse_sample_sheet,
    plan_units,
    resolve_cohort,
)
from tests.support.cohort import hard_linked_cohort


def test_sample_sheet_layouts() -> None:
    rows = [SheetRow("a.bams3", line=1), SheetRow("b.bams3", line=4)]
    assert parse_sample_sheet("a.bams3\n# c\n\nb.bams3\n") == rows
    assert parse_sample_sheet("S1\ts3://b/x y.bams3\n") == [SheetRow("s3://b/x y.bams3", "S1", line=1)]
    # A conversion sheet with a header serves the cohort jobs too (its output is the dataset).
    text = "sample\tinput\toutput\nS1\ta.bam\ta.bams3\n"
    assert parse_sample_sheet(text) == [SheetRow("a.bams3", "S1", "a.bam", 2)]
    assert parse_sample_sheet(text, conversion=True) == [SheetRow("a.bams3", "S1", "a.bam", 2)]
    rows = [SheetRow("out.bams3", None, "in.bam", 1)]
    assert parse_sample_sheet("in.bam\tout.bams3\n", conversion=True) == rows
    with pytest.raises(InvalidArgumentError, match="s.tsv line 2: expected DATASET or SAMPLE<TAB>DATASET"):
        parse_sample_sheet("a\nS\tb\tc\n", "s.tsv")
    with pytest.raises(InvalidArgumentError, match="line 2: expected 2 columns as in the header"):
        parse_sample_sheet("sample\tdataset\nS1\n")
    with pytest.raises(InvalidArgumentError, match="no dataset/output column"):
        parse_sample_sheet("sample\tinput\nS\tx\n")
    with pytest.raises(InvalidArgumentError, match="no samples"):
        parse_sample_sheet("# nothing\n")


def test_resolve_globs_sheet_and_duplicates(multi_bam: Path, tmp_path: Path) -> None:
    paths = hard_linked_cohort(multi_bam, tmp_path / "c", 4)
    cohort = resolve_cohort([str(tmp_path / "c" / "*.bams3")])
    assert cohort.names == [f"S{i:04d}" for i in range(4)]
    assert [s.index for s in cohort.samples] == [0, 1, 2, 3]
    assert all(s.references and s.bytes == sum(r.bytes for r in s.references) for s in cohort.samples)
    # A glob and a path naming one dataset count once; the sheet renames.
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text(f"sample\tdataset\nX\t{paths[0]}\n")
    cohort = resolve_cohort([paths[1], paths[1]], str(sheet), parallelism=1)
    assert cohort.names == ["S0001", "X"]
    # Many samples per core: planning keeps no per-reference totals.
    assert not any(s.references for s in resolve_cohort(paths, parallelism=1).samples)
    # Two datasets of one sample: one line naming both.
    sheet.write_text(f"S0001\t{paths[0]}\n")
    with pytest.raises(DatasetError, match=r"'S0001' appears twice \(.*S0001.bams3 and .*S0000.bams3\)"):
        resolve_cohort([paths[1]], str(sheet))
    with pytest.raises(NotADatasetError, match="no dataset matches"):
        resolve_cohort([str(tmp_path / "nothing*")])
    with pytest.raises(InvalidArgumentError, match="no dataset given"):
        resolve_cohort([])


def _cohort(n: int, refs: tuple[RefTotals, ...]) -> Cohort:
    size = sum(r.bytes for r in refs)
    chunks = sum(r.chunks for r in refs)
    return Cohort(tuple(CohortSample(f"u{i}", f"S{i}", i, chunks, size, refs) for i in range(n)), {})


def test_units_by_sample_reference_and_runs() -> None:
    refs = (RefTotals("chr1", 1000, 4, 400), RefTotals("chr2", 500, 1, 100), RefTotals("chr3", 10, 0, 0))
    # Enough samples per core: one unit per sample, in cohort order.
    units = plan_units(_cohort(6, refs), 2)
    assert [(u.sample, u.rname) for u in units] == [(f"S{i}", None) for i in range(6)]
    # Few samples: references with reads; chr1 (400 of 500 bytes) split into runs by chunk sizes.
    units = plan_units(_cohort(1, refs), 2, chunk_sizes=lambda url, rname: [100, 100, 100, 100])
    assert [(u.rname, u.first, u.last, u.part, u.parts) for u in units] == [
        ("chr1", 0, 1, 0, 4), ("chr1", 1, 2, 1, 4), ("chr1", 2, 3, 2, 4), ("chr1", 3, 4, 3, 4),
        ("chr2", -1, -1, 0, 1), ("chr3", -1, -1, 0, 1),
    ]
    units = plan_units(_cohort(1, refs), 2, split_references=False)
    assert [(u.rname, u.parts) for u in units] == [("chr1", 1), ("chr2", 1), ("chr3", 1)]


def test_bundles_keep_order_and_balance() -> None:
    units = plan_units(_cohort(10, (RefTotals("c", 1, 1, 10),)), 1)
    groups = bundle(units, 4)
    assert len(groups) <= 4
    assert [u.sample for g in groups for u in g] == [u.sample for u in units]
    assert max(len(g) for g in groups) - min(len(g) for g in groups) <= 1
    with pytest.raises(InvalidArgumentError, match="same file name"):
        check_file_names(["a/b", "a_b"])


def test_planning_memory_is_small_per_sample() -> None:
    """Planning holds a few numbers per sample: 10,000 samples' units stay far below 1 GB."""
    refs = tuple(RefTotals(f"chr{i}", 1000, 2, 100) for i in range(25))
    tracemalloc.start()
    cohort = Cohort(tuple(CohortSample(f"s3://b/cohort/S{i:05d}.bams3", f"S{i:05d}", i, 50, 2500)
                          for i in range(10_000)), {})
    units = plan_units(cohort, 200)
    groups = bundle(units, 800)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(units) == 10_000 and len(groups) == 800
    assert peak < 50 << 20
    assert plan_units(_cohort(2, refs), 200, split_references=False)[0].rname == "chr0"
