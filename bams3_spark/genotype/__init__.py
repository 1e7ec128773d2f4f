"""Allele counts at known sites with ``samtools mpileup -B``'s rules, from BAMS3 datasets.

Layers, lowest first: :mod:`.options` (mpileup's options), :mod:`.sites` (BED
and VCF sites), :mod:`.cigars` (CIGAR operations as arrays), :mod:`.reads`
(a batch of records as arrays), :mod:`.overlaps` (htslib's mate-overlap
rule), :mod:`.pileup` (the counting), :mod:`.engine` (datasets and sites in,
counts out, in worker processes) and :mod:`.output` (TSV and VCF).
"""

from bams3_spark.genotype.engine import SCHEMA, genotype, genotype_table
from bams3_spark.genotype.options import GenotypeOptions, parse_flags
from bams3_spark.genotype.sites import Sites, SitesError, read_sites

__all__ = [
    "SCHEMA",
    "GenotypeOptions",
    "Sites",
    "SitesError",
    "genotype",
    "genotype_table",
    "parse_flags",
    "read_sites",
]
