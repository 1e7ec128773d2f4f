"""Read depth with mosdepth's and ``samtools depth``'s rules, from BAMS3 datasets.

Layers, lowest first: :mod:`.options` (modes, filters, ``by``), :mod:`.cigar`
(CIGAR blocks as arrays), :mod:`.depth` (the per-reference accumulator, mate
overlaps included), :mod:`.stats` (windows, regions, distributions, tables),
:mod:`.mosdepth` (mosdepth's files), :mod:`.slices` (a reference or region of
a dataset), :mod:`.engine` (datasets in, tables and files out, in worker
processes), :mod:`.chunked` (the chunk-parallel form used by Spark) and
:mod:`.plot`.
"""

from bams3_spark.coverage.depth import DepthAccumulator, ReferenceDepth, reference_depth
from bams3_spark.coverage.engine import CoverageRun, coverage_table, iter_depths, write_coverage
from bams3_spark.coverage.mosdepth import MosdepthWriter, write_mosdepth_outputs
from bams3_spark.coverage.options import CoverageOptions, coverage_options
from bams3_spark.coverage.slices import DepthSlice

__all__ = [
    "CoverageOptions",
    "CoverageRun",
    "DepthAccumulator",
    "DepthSlice",
    "MosdepthWriter",
    "ReferenceDepth",
    "coverage_options",
    "coverage_table",
    "iter_depths",
    "reference_depth",
    "write_coverage",
    "write_mosdepth_outputs",
]
