"""BGZF (blocked gzip) files, written through htslib (pysam), readable by zcat, tabix and samtools.

One writer for every BGZF output of the package (mosdepth's ``.bed.gz``
files, parts written by worker processes) and the rule for joining parts.
"""

from __future__ import annotations

import os
from typing import Any

#: The empty block that ends every BGZF file (SAM/BAM spec §4.1.2).
EOF_BLOCK = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


class BgzfWriter:
    """Write a BGZF file with htslib at a given zlib level (1 fast .. 9 small).

    Args:
        path: The file to create.
        level: zlib compression level; htslib's default (6) when None.
    """

    def __init__(self, path: str | os.PathLike[str], level: int | None = None) -> None:
        from pysam.libcbgzf import BGZFile

        # htslib's bgzf_open reads a digit in the mode as the zlib level.
        mode = "wb" if level is None else f"wb{int(level)}"
        self.path = os.fspath(path)
        self._out: Any = BGZFile(self.path, mode, None)  # type: ignore[arg-type]

    def write(self, data: str | bytes) -> None:
        """Append text (UTF-8) or bytes."""
        if data:
            self._out.write(data.encode() if isinstance(data, str) else data)

    def close(self) -> None:
        """Flush, write the end-of-file block and close."""
        self._out.close()

    def __enter__(self) -> BgzfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BgzfConcatenator:
    """One BGZF file made of complete BGZF parts, in the order they are appended.

    A BGZF file is a series of independent gzip members, so parts written in
    other processes join by concatenation; only each part's end-of-file block
    is dropped, so that the one at the end of the whole file is the only one.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed by close()

    def append_part(self, part: str | os.PathLike[str]) -> None:
        """Append a complete BGZF file, then delete it."""
        with open(part, "rb") as src:
            data = src.read()
        os.unlink(part)
        if data.endswith(EOF_BLOCK):
            data = data[: -len(EOF_BLOCK)]
        self._fh.write(data)

    def close(self) -> None:
        """Write the end-of-file block and close."""
        self._fh.write(EOF_BLOCK)
        self._fh.close()
