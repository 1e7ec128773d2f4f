"""BAMS3 datasets: reading them (:mod:`.reader`), their chunk objects (:mod:`.chunks`,
the one chunk reader) and writing them with the commit protocol (:mod:`.writer`)."""

from bams3_spark.dataset.chunks import ChunkRef
from bams3_spark.dataset.reader import DatasetReader, check_distinct_samples, load_manifest

__all__ = ["ChunkRef", "DatasetReader", "check_distinct_samples", "load_manifest"]
