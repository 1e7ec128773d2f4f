"""CIGAR strings as arrays: reference blocks of every read of a chunk, without a loop per read.

Each distinct CIGAR string of a chunk is parsed once (they repeat a lot),
vectorized over the bytes of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.arrays import strings

I64 = npt.NDArray[np.int64]

# BAM op codes: M I D N S H P = X B
_OPS = "MIDNSHP=XB"
_LUT = np.full(256, -1, dtype=np.int8)
for _i, _c in enumerate(_OPS):
    _LUT[ord(_c)] = _i
_LUT[ord("0"):ord("9") + 1] = -2
_CONSUMES_REF = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 0], dtype=np.int64)
# Blocks that add depth: M, =, X (mosdepth's ops consuming query and
# reference; samtools' BAM_CMATCH/CEQUAL/CDIFF) ...
_BLOCK_OPS = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
# ... plus D for samtools depth -J.
_BLOCK_OPS_DEL = np.array([1, 0, 1, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
_POW10 = 10 ** np.arange(19, dtype=np.int64)


@dataclass(frozen=True)
class Cigars:
    """Parsed CIGAR strings: op counts and reference blocks per string."""

    n_ops: I64  # number of CIGAR operations per string ("*" -> 0)
    block_ptr: I64  # blocks of string i are block_*[ptr[i]:ptr[i+1]]
    block_start: I64  # reference offset of each block from the read start
    block_end: I64


def string_bytes(arr: pa.Array) -> tuple[npt.NDArray[np.uint8], I64]:
    """Return (bytes, offsets relative to bytes) of a string array."""
    bufs = arr.buffers()
    otype = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=otype)[arr.offset: arr.offset + len(arr) + 1]
    offsets = offsets.astype(np.int64)
    data = (
        np.frombuffer(bufs[2], dtype=np.uint8)
        if bufs[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    data = data[offsets[0]: offsets[-1]]
    return data, offsets - offsets[0]


def parse_cigars(cigars: pa.Array, count_deletions: bool = False) -> Cigars:
    """Parse CIGAR strings without a per-string Python loop.

    Args:
        cigars: SAM CIGAR texts (``"*"`` or ``""`` for none).
        count_deletions: Treat ``D`` as a depth block (samtools ``-J``).

    Returns:
        Op counts and reference blocks of every string.

    Raises:
        ValueError: On a malformed CIGAR string.
    """
    n = len(cigars)
    data, offsets = string_bytes(strings(cigars))
    lengths = np.diff(offsets)
    str_of_byte = np.repeat(np.arange(n, dtype=np.int64), lengths)
    first_byte = np.zeros(n, dtype=np.uint8)
    nonempty = lengths > 0
    first_byte[nonempty] = data[offsets[:-1][nonempty]]
    no_cigar = (lengths == 0) | ((lengths == 1) & (first_byte == ord("*")))
    keep = ~no_cigar[str_of_byte]
    data = data[keep]
    str_of_byte = str_of_byte[keep]

    code = _LUT[data]
    if (code == -1).any():
        bad = int(str_of_byte[np.flatnonzero(code == -1)[0]])
        raise ValueError(f"invalid CIGAR string {cigars[bad].as_py()!r}")
    is_op = code >= 0
    op_pos = np.flatnonzero(is_op)
    op_code = code[op_pos].astype(np.int64)
    op_str = str_of_byte[op_pos]
    n_op = len(op_pos)

    digit_idx = np.flatnonzero(~is_op)
    op_of_digit = np.cumsum(is_op)[digit_idx]  # ops strictly before the digit
    bad_digit = op_of_digit >= n_op
    if not bad_digit.any():
        bad_digit = str_of_byte[digit_idx] != op_str[op_of_digit]
    if bad_digit.any():
        bad = int(str_of_byte[digit_idx[np.flatnonzero(bad_digit)[0]]])
        raise ValueError(f"invalid CIGAR string {cigars[bad].as_py()!r}")
    n_digits = np.bincount(op_of_digit, minlength=n_op)
    if n_op and ((n_digits == 0) | (n_digits > 10)).any():
        bad = int(op_str[np.flatnonzero((n_digits == 0) | (n_digits > 10))[0]])
        raise ValueError(f"invalid CIGAR string {cigars[bad].as_py()!r}")
    exponent = op_pos[op_of_digit] - digit_idx - 1
    values = (data[digit_idx].astype(np.int64) - ord("0")) * _POW10[exponent]
    # Float weights are exact here: every partial sum is an integer < 2**53.
    op_len = np.rint(np.bincount(op_of_digit, weights=values, minlength=n_op)).astype(np.int64)

    ref_len = op_len * _CONSUMES_REF[op_code]
    cum = np.cumsum(ref_len)
    first_op = np.searchsorted(op_str, np.arange(n), side="left")
    base = np.concatenate(([0], cum))[first_op]
    op_off = cum - ref_len - base[op_str]

    block_table = _BLOCK_OPS_DEL if count_deletions else _BLOCK_OPS
    is_block = block_table[op_code] & (op_len > 0)
    block_str = op_str[is_block]
    block_start = op_off[is_block]
    block_end = block_start + op_len[is_block]
    # Merge blocks that touch (separated only by I/S/H/P), as mosdepth's
    # gen_start_ends does: its mate-overlap sweep relies on a read never
    # having an end and a start event at the same position.
    if len(block_str):
        new = np.ones(len(block_str), dtype=bool)
        new[1:] = (block_str[1:] != block_str[:-1]) | (block_start[1:] != block_end[:-1])
        last = np.concatenate((np.flatnonzero(new)[1:] - 1, [len(new) - 1]))
        block_str = block_str[new]
        block_end = block_end[last]
        block_start = block_start[new]
    block_ptr = np.concatenate(([0], np.cumsum(np.bincount(block_str, minlength=n))))
    return Cigars(
        n_ops=np.bincount(op_str, minlength=n).astype(np.int64),
        block_ptr=block_ptr.astype(np.int64),
        block_start=block_start,
        block_end=block_end,
    )


def expand_blocks(parsed: Cigars, codes: I64, starts: I64) -> tuple[I64, I64, I64]:
    """Return (owner index, start, end) of every reference block of reads.

    Args:
        parsed: Parsed distinct CIGARs.
        codes: Index into ``parsed`` of each read's CIGAR.
        starts: 0-based start of each read.
    """
    first = parsed.block_ptr[codes]
    count = parsed.block_ptr[codes + 1] - first
    if bool((count == 1).all()):
        # One block per read (unspliced reads without deletions: the usual chunk).
        owner = np.arange(len(codes), dtype=np.int64)
        return owner, starts + parsed.block_start[first], starts + parsed.block_end[first]
    total = int(count.sum())
    owner = np.repeat(np.arange(len(codes), dtype=np.int64), count)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    bi = np.repeat(first, count) + within
    base = starts[owner]
    return owner, base + parsed.block_start[bi], base + parsed.block_end[bi]
