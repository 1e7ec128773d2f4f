"""Cohorts made cheaply: one converted dataset hard-linked under many sample names."""

from __future__ import annotations

from pathlib import Path

from bams3_spark.convert import convert


def hard_link_dataset(source: Path, out: Path, sample: str) -> str:
    """Copy dataset ``source`` to ``out`` as sample ``sample``: objects hard-linked, manifest rewritten."""
    import json

    for path in source.rglob("*"):
        target = out / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.name != "bams3.json":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.hardlink_to(path)
    doc = json.loads((source / "bams3.json").read_text())
    doc["sample"] = sample
    (out / "bams3.json").write_text(json.dumps(doc, indent=1))
    return str(out)


def hard_linked_cohort(bam: Path, root: Path, n: int, chunk_size: str = "256K",
                       max_chunk_records: int | None = None) -> list[str]:
    """Convert ``bam`` once under ``root`` and return ``n`` hard-linked datasets ``S0000``, ``S0001``..."""
    root.mkdir(parents=True, exist_ok=True)
    source = root / "_source.bams3.d"
    if not (source / "bams3.json").exists():
        kwargs = {"max_chunk_records": max_chunk_records} if max_chunk_records else {}
        convert(str(bam), str(source), chunk_size=chunk_size, **kwargs)  # type: ignore[arg-type]
    return [hard_link_dataset(source, root / f"S{i:04d}.bams3", f"S{i:04d}") for i in range(n)]
