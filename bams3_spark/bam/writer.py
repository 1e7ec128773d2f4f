"""Writing record tables as BAM, through htslib (pysam's samtools)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

import pyarrow as pa
import pysam

from bams3_spark.exceptions import one_line
from bams3_spark.format.sam import sam_lines
from bams3_spark.io.storage import replacing


def write_bam(path: str, header_text: str, tables: Iterable[pa.Table], threads: int = 1) -> int:
    """Write records as BAM (through pysam's samtools); return the number written.

    The SAM text fed to htslib keeps exact aux floats, so floats survive the
    round trip bit for bit.
    """
    with tempfile.TemporaryDirectory(prefix="bams3-bam-") as work, replacing(path) as out:
        # htslib encodes from SAM text; the text goes to a scratch file first so a
        # read error mid-way leaves no BAM (and ``replacing`` no partial ``path``).
        sam = os.path.join(work, "records.sam")
        n = 0
        with open(sam, "w") as tmp:
            tmp.write(header_text)
            for table in tables:
                if table.num_rows:
                    tmp.write("\n".join(sam_lines(table, exact_floats=True).to_pylist()))
                    tmp.write("\n")
                    n += table.num_rows
        args = ["-b", "--no-PG", "-@", str(max(1, threads)), "-o", out, sam]
        try:
            pysam.view(*args, catch_stdout=False)
        except pysam.SamtoolsError as exc:
            raise OSError(f"{path}: cannot write BAM ({one_line(exc)})") from None
    return n
