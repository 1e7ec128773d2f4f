"""Input and output below the dataset layer: storage over fsspec, BED files, BGZF files.

Modules: :mod:`~bams3_spark.io.storage` (one interface for local paths, S3 and
other fsspec stores), :mod:`~bams3_spark.io.bed` (BED in samtools' and
mosdepth's dialects) and :mod:`~bams3_spark.io.bgzf` (blocked gzip output).
"""
