"""Genotyping outputs: the TSV table and a multi-sample VCF (FORMAT ``DP:AD``), bgzipped and tabix-indexed.

AD is over the site's REF and ALT alleles for VCF sites (single-base alleles
count their base, ``*`` counts deletions; longer alleles get ``.``), or over
the alleles observed at the site for BED sites: without a reference, REF is
the cohort's most counted base (``N`` if none) and ALT the other bases seen,
by decreasing count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.genotype.engine import SCHEMA
from bams3_spark.genotype.pileup import CATEGORIES
from bams3_spark.genotype.sites import Sites
from bams3_spark.io.bgzf import BgzfWriter
from bams3_spark.io.storage import replacing

I64 = npt.NDArray[np.int64]
_BASES = "ACGT"
_DEL = CATEGORIES.index("del")


def tsv_header() -> str:
    """The TSV header line (column names of :data:`~bams3_spark.genotype.engine.SCHEMA`)."""
    return "\t".join(SCHEMA.names) + "\n"


def tsv_text(table: pa.Table) -> str:
    """Rows of a counts table as TSV lines (no header)."""
    if table.num_rows == 0:
        return ""
    cols = [table[name].to_pylist() for name in SCHEMA.names]
    return "".join("\t".join(map(str, row)) + "\n" for row in zip(*cols, strict=True))


def vcf_header(contigs: Sequence[tuple[str, int]], samples: Sequence[str]) -> str:
    """The VCF header: contigs of the datasets, FORMAT DP and AD, one column per sample."""
    lines = ["##fileformat=VCFv4.2", "##source=bams3-spark genotype (samtools mpileup -B counting rules)"]
    lines += [f"##contig=<ID={name},length={length}>" for name, length in contigs]
    lines += [
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Reads with a base or a deletion at the site '
        '(samtools mpileup -B depth without reference skips)">',
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Reads supporting each allele (. for alleles '
        'other than single bases and *)">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]),
    ]
    return "\n".join(lines) + "\n"


def _allele_count(allele: str, per_cat: I64) -> I64 | None:
    """Counts of an allele across samples (per_cat: samples x categories), or None if not countable."""
    if len(allele) == 1 and allele in "ACGTN":
        return per_cat[:, "ACGTN".index(allele)]
    if allele == "*":
        return per_cat[:, _DEL]
    return None


def vcf_lines(
    chroms: Sequence[str], sites: Sites, lo: int, hi: int, counts: Sequence[I64],
) -> str:
    """VCF records of sites ``[lo, hi)``; ``counts`` holds each sample's (hi-lo, 7, 2) counts."""
    if hi <= lo:
        return ""
    per = np.stack([c.sum(axis=2) for c in counts], axis=1) if counts else np.zeros((hi - lo, 0, 7), np.int64)
    depth = per[:, :, :6].sum(axis=2)
    out: list[str] = []
    for i in range(hi - lo):
        k = lo + i
        cats = per[i]
        if sites.vcf:
            ident, ref, alts = sites.ident[k], sites.ref[k], list(sites.alt[k])
        else:
            totals = cats[:, :4].sum(axis=0)
            seen = [b for b in sorted(range(4), key=lambda b: (-totals[b], b)) if totals[b] > 0]
            ident = "."
            ref = _BASES[seen[0]] if seen else "N"
            alts = [_BASES[b] for b in seen[1:]]
        columns = [_allele_count(a, cats) for a in [ref, *alts]]
        fields = []
        for s in range(cats.shape[0]):
            ad = ",".join("." if c is None else str(int(c[s])) for c in columns)
            fields.append(f"{int(depth[i, s])}:{ad}")
        out.append("\t".join([
            chroms[k], str(int(sites.pos[k]) + 1), ident, ref, ",".join(alts) or ".", ".", ".", ".", "DP:AD",
            *fields,
        ]))
    return "\n".join(out) + "\n"


def bgzf_bytes(text: str) -> bytes:
    """``text`` as BGZF blocks without the end-of-file block: a part that concatenates with others."""
    import tempfile

    from bams3_spark.io.bgzf import EOF_BLOCK

    with tempfile.TemporaryDirectory(prefix="bams3-bgzf-") as tmp:
        path = os.path.join(tmp, "part.gz")
        with BgzfWriter(path) as out:
            out.write(text)
        with open(path, "rb") as fh:
            data = fh.read()
    return data[: -len(EOF_BLOCK)] if data.endswith(EOF_BLOCK) else data


def write_vcf(
    path: str | os.PathLike[str],
    contigs: Sequence[tuple[str, int]],
    samples: Sequence[str],
    sites: Sites,
    counts: Sequence[I64],
    block: int = 10_000,
) -> None:
    """Write a bgzipped multi-sample VCF and its tabix index (``.tbi``); nothing partial on failure."""
    chroms = sites.chrom_of()
    with replacing(path) as tmp:
        with BgzfWriter(tmp) as out:
            out.write(vcf_header(contigs, samples))
            for lo in range(0, len(sites), block):
                hi = min(len(sites), lo + block)
                out.write(vcf_lines(chroms, sites, lo, hi, [c[lo:hi] for c in counts]))
    index_vcf(path)


def index_vcf(path: str | os.PathLike[str]) -> None:
    """Write the tabix index of a bgzipped VCF (``PATH.tbi``)."""
    import pysam

    pysam.tabix_index(os.fspath(path), preset="vcf", force=True, keep_original=True)
