"""BAM input and output: htslib (pysam) where it is the right tool, columns where speed matters.

Modules: :mod:`~bams3_spark.bam.reader` (opening BAMs, headers, htslib's SAM
text of a record), :mod:`~bams3_spark.bam.records` (binary BAM records decoded
straight into Arrow columns), :mod:`~bams3_spark.bam.scan` (windows of a BAM
read in columns), :mod:`~bams3_spark.bam.index` (BAI/CSI parsing),
:mod:`~bams3_spark.bam.slices` (byte ranges of remote BAMs) and
:mod:`~bams3_spark.bam.writer` (record tables written as BAM through htslib).
"""
