"""BGZF (blocked gzip) files: written through htslib (pysam), read block by block with libdeflate.

One writer for every BGZF output of the package (mosdepth's ``.bed.gz``
files, parts written by worker processes), the rule for joining parts, and
the fast reader of BAM bytes between two virtual offsets (the converter's).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

from bams3_spark.exceptions import InputFormatError

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


class BgzfReader:
    """Read a local BGZF file's decompressed bytes between two virtual offsets, fast.

    Blocks are inflated by libdeflate (the ``deflate`` package, the inflater
    samtools itself links), about three times faster than zlib, and each
    block's CRC32 and size are checked, so a damaged or truncated file fails
    with :class:`~bams3_spark.exceptions.InputFormatError` instead of yielding wrong bytes. A virtual offset
    is ``(compressed block offset << 16) | offset inside the block``.

    Args:
        path: The BGZF file (a BAM).
    """

    #: Read the file in pieces of this many compressed bytes.
    PIECE = 4 << 20

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def __enter__(self) -> BgzfReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pieces(self, begin: int, end: int | None = None, piece_bytes: int | None = None) -> Iterator[bytes]:
        """Yield the decompressed bytes from virtual offset ``begin`` to ``end`` (None: to the end).

        Consecutive blocks are joined into pieces of roughly ``piece_bytes``
        compressed bytes, so callers see few, large buffers.

        Raises:
            InputFormatError: On a block that is not BGZF, truncated, or fails its CRC.
        """
        import deflate

        step = piece_bytes or self.PIECE
        coffset, skip = begin >> 16, begin & 0xFFFF
        stop_block, stop_at = (None, 0) if end is None else (end >> 16, end & 0xFFFF)
        fh = self._fh
        fh.seek(coffset)
        raw = b""
        pos = coffset  # file offset of raw[0]
        out: list[bytes | bytearray] = []
        data: bytes | bytearray
        size = 0
        while stop_block is None or coffset < stop_block or (coffset == stop_block and stop_at):
            if coffset - pos + 18 > len(raw):
                raw = raw[coffset - pos :] + fh.read(step)
                pos = coffset
            at = coffset - pos
            if at >= len(raw):
                break  # end of file
            header = raw[at : at + 18]
            if len(header) < 18 or header[:4] != b"\x1f\x8b\x08\x04":
                raise InputFormatError(f"{self.path}: not a BGZF block at byte {coffset}")
            xlen = int.from_bytes(header[10:12], "little")
            bsize = _block_size(raw, at, xlen) if xlen != 6 or header[12:14] != b"BC" else (
                int.from_bytes(header[16:18], "little") + 1
            )
            if bsize is None or bsize < 12 + xlen + 8:
                raise InputFormatError(f"{self.path}: malformed BGZF block at byte {coffset}")
            if at + bsize > len(raw):
                raw = raw[at:] + fh.read(max(step, bsize))
                pos, at = coffset, 0
                if bsize > len(raw):
                    raise InputFormatError(f"{self.path}: truncated BGZF block at byte {coffset}")
            crc, isize = _FOOTER.unpack_from(raw, at + bsize - 8)
            if isize:
                try:
                    data = deflate.deflate_decompress(raw[at + 12 + xlen : at + bsize - 8], isize)
                except deflate.DeflateError as exc:
                    raise InputFormatError(
                        f"{self.path}: corrupt BGZF block at byte {coffset} ({exc})"
                    ) from None
                if deflate.crc32(data) != crc:
                    raise InputFormatError(f"{self.path}: CRC mismatch in BGZF block at byte {coffset}")
            else:
                data = b""
            if stop_block is not None and coffset == stop_block:
                data = data[:stop_at]
            if skip:
                data, skip = data[skip:], 0
            if data:
                out.append(data)
                size += bsize
            coffset += bsize
            if size >= step:
                yield b"".join(out)
                out, size = [], 0
        if out:
            yield b"".join(out)


_FOOTER = struct.Struct("<II")


def _block_size(raw: bytes, at: int, xlen: int) -> int | None:
    """BSIZE + 1 from the ``BC`` subfield of a gzip header's extra field, if any."""
    p, end = at + 12, at + 12 + xlen
    while p + 4 <= end:
        si, slen = raw[p : p + 2], int.from_bytes(raw[p + 2 : p + 4], "little")
        if si == b"BC" and slen == 2:
            return int.from_bytes(raw[p + 4 : p + 6], "little") + 1
        p += 4 + slen
    return None
