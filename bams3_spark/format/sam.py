"""SAM text <-> Arrow record tables, vectorized.

The converter takes records as the SAM lines htslib formats (so every field is
exactly what ``samtools view`` prints) and splits them into the record columns
with Arrow compute, without a Python loop per record. Exporting joins the
columns back into lines the same way.

Aux floats: SAM text prints ``f`` and ``B:f`` values with ``%g`` (6 significant
digits), which loses bits. Stored ``tags`` text therefore holds the shortest
decimal that reads back to the same float32 (see FORMAT.md); :func:`sam_lines`
re-prints them with ``%g`` for SAM output, so the text equals samtools'.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bams3_spark.arrays import bools, floats, int_scalar, string_array, string_scalar
from bams3_spark.format.flags import UNMAP
from bams3_spark.format.schema import RECORD_SCHEMA, SAM_COLUMNS

_F32 = struct.Struct("<f")
_NEWLINE = ord("\n")
_TAB = ord("\t")
_CSV_NAMES = [*SAM_COLUMNS, "tags"]
_CIGAR_OP_RE = re.compile(r"(\d+)([MIDNSHP=X])")
_CIGAR_RE = re.compile(r"^(?:\d+[MIDNSHP=X])+$")
#: CIGAR operations that consume reference bases (M, D, N, =, X).
_REF_OPS = frozenset("MDN=X")
_FLOAT_TAG_RE = re.compile(r"(?:^|\t)[A-Za-z][A-Za-z0-9]:(?:f:|B:f)")
_FLOAT_TAG_PATTERN = r"(^|\t)[A-Za-z][A-Za-z0-9]:(f:|B:f)"
_F_FIELD_PATTERN = r"^[A-Za-z][A-Za-z0-9]:f:"
_B_F_FIELD_PATTERN = r"(^|\t)[A-Za-z][A-Za-z0-9]:B:f"


def cigar_ref_length(cigar: str) -> int:
    """Return the number of reference bases a SAM CIGAR string consumes.

    Raises:
        ValueError: If the CIGAR string is malformed.
    """
    if cigar == "*":
        return 0
    if not _CIGAR_RE.match(cigar):
        raise ValueError(f"malformed CIGAR {cigar[:40]!r}")
    return sum(int(n) for n, op in _CIGAR_OP_RE.findall(cigar) if op in _REF_OPS)


def compute_end(
    pos: pa.Array | pa.ChunkedArray, flag: pa.Array | pa.ChunkedArray, cigar: pa.Array | pa.ChunkedArray
) -> pa.Array:
    """Compute the ``end`` column (htslib ``bam_endpos``, 1-based inclusive).

    Unmapped reads and alignments consuming no reference cover one base.
    Each distinct CIGAR string is parsed once (they repeat a lot).
    """
    if isinstance(cigar, pa.ChunkedArray):
        cigar = cigar.combine_chunks()
    encoded = pc.dictionary_encode(cigar)
    lengths = np.fromiter(
        (cigar_ref_length(c) for c in encoded.dictionary.to_pylist()),
        dtype=np.int64,
        count=len(encoded.dictionary),
    )
    rlen = lengths[encoded.indices.to_numpy()]
    flags = _numpy(flag)
    rlen[(flags & UNMAP) != 0] = 0
    np.maximum(rlen, 1, out=rlen)
    positions = _numpy(pos)
    end = np.where(positions > 0, positions + rlen - 1, 0)
    return pa.array(end.astype(np.int32), pa.int32())


def _numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    # np.asarray() on Arrow objects can fall back to per-element conversion.
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


#: Arrow string views address their data buffer with int32 offsets.
_MAX_VIEW_BUFFER = (1 << 31) - 1


def lines_to_table(lines: list[str]) -> pa.Table:
    """Split SAM record lines into a record table (schema ``RECORD_SCHEMA``).

    The lines are joined into one buffer; numpy finds every field's bounds
    from the tab and newline positions, and each column is built as an Arrow
    string-view array pointing into that buffer (no per-record Python work,
    no copy until Arrow casts the views to plain strings and integers).

    Args:
        lines: SAM records (no header, no newlines).

    Returns:
        The records as an Arrow table with the ``end`` column computed.

    Raises:
        ValueError: If a line has fewer than 11 fields or a bad number.
    """
    if not lines:
        return RECORD_SCHEMA.empty_table()
    text = ("\n".join(lines) + "\n").encode()
    if len(text) > _MAX_VIEW_BUFFER:
        half = len(lines) // 2
        return pa.concat_tables([lines_to_table(lines[:half]), lines_to_table(lines[half:])])
    # 12 bytes of padding let every view read three words past any start.
    raw = text + bytes(16)
    data = np.frombuffer(raw, dtype=np.uint8)[: len(text)]
    words = np.ndarray((len(text) + 12,), dtype="<u4", buffer=raw, strides=(1,))
    tabs = np.flatnonzero(data == _TAB)
    newlines = np.flatnonzero(data == _NEWLINE)
    n = len(lines)
    if len(newlines) != n:
        raise ValueError("SAM record with an embedded newline")
    line_starts = np.empty(n, dtype=np.int64)
    line_starts[0] = 0
    line_starts[1:] = newlines[:-1] + 1
    first_tab = np.searchsorted(tabs, line_starts)
    tab_count = np.diff(np.append(first_tab, len(tabs)))
    if tab_count.min() < 10:
        raise ValueError("SAM record with fewer than 11 fields")
    has_tags = tab_count > 10
    # Tab k of each line (k < 10 always exists); tab 10 only with tags.
    field_ends = [tabs[first_tab + k] for k in range(10)]
    tab10 = tabs[np.minimum(first_tab + 10, len(tabs) - 1)]
    field_ends.append(np.where(has_tags, tab10, newlines))
    bounds = [(line_starts, field_ends[0])]
    bounds += [(field_ends[k - 1] + 1, field_ends[k]) for k in range(1, 11)]
    bounds.append((np.where(has_tags, tab10 + 1, newlines), newlines))
    buffer = pa.py_buffer(raw)
    columns: dict[str, pa.Array] = {}
    for name, (begin, stop) in zip(_CSV_NAMES, bounds, strict=True):
        views = _string_views(words, begin, stop - begin, buffer)
        field = RECORD_SCHEMA.field(name)
        try:
            columns[name] = pc.cast(views, field.type)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"SAM field {name}: {exc}") from None
    columns["end"] = compute_end(columns["pos"], columns["flag"], columns["cigar"])
    return pa.table([columns[f.name] for f in RECORD_SCHEMA], schema=RECORD_SCHEMA)


def _string_views(words: np.ndarray, starts: np.ndarray, lengths: np.ndarray, buffer: pa.Buffer) -> pa.Array:
    """Build an Arrow ``string_view`` array of slices of a buffer.

    Arrow's layout is 16 bytes per value: int32 length, then either the bytes
    inline when at most 12, or a 4-byte prefix, buffer index 0 and an int32
    offset. ``words`` is the buffer seen as little-endian uint32 at every byte
    offset, so each part of a view is one vectorized gather.
    """
    n = len(starts)
    views = np.empty((n, 4), dtype="<u4")
    views[:, 0] = lengths
    views[:, 1] = words[starts]
    second = words[starts + 4]
    third = words[starts + 8]
    # Zero the bytes past the end of short strings (Arrow requires it).
    for col, word, j in ((1, views[:, 1], 0), (2, second, 1), (3, third, 2)):
        valid = np.clip(lengths - 4 * j, 0, 4).astype(np.uint64)
        mask = ((np.uint64(1) << (valid * np.uint64(8))) - np.uint64(1)).astype("<u4")
        views[:, col] = word & mask
    long_ = lengths > 12
    views[long_, 1] = words[starts[long_]]
    views[long_, 2] = 0
    views[long_, 3] = starts[long_]
    return pa.Array.from_buffers(pa.string_view(), n, [None, pa.py_buffer(views), buffer])


FLOAT_FIELD_RE = re.compile(r"(?:^|\t)([A-Za-z][A-Za-z0-9]):(f:|B:f)([^\t]*)")


def float_tag_names(tags: str) -> list[str]:
    """Return the names of the ``f`` and ``B:f`` fields of a tags string."""
    return [m.group(1) for m in FLOAT_FIELD_RE.finditer(tags)]


def exact_float_tags(tags: str, values: Mapping[str, object]) -> str:
    """Rewrite ``f``/``B:f`` values of a tags string with their exact float32 text.

    htslib's ``%g`` text is kept where it already reads back to the same
    float32 (the usual case: aligners print few digits), so only values that
    ``%g`` rounds get a longer, exact text.

    Args:
        tags: Tab-separated SAM optional fields as htslib prints them.
        values: Name of each float field to its exact value (a float, or a
            sequence of floats for ``B:f``), as pysam returns them.
    """

    def fix(m: re.Match[str]) -> str:
        lead, tag, kind, body = m.group(0)[:1], m.group(1), m.group(2), m.group(3)
        lead = lead if lead == "\t" else ""
        value = values[tag]
        if kind == "f:":
            text = body if same_f32(body, value) else f32_text(value)  # type: ignore[arg-type]
            return f"{lead}{tag}:f:{text}"
        printed = body.split(",")[1:] if body.startswith(",") else []
        items = list(value)  # type: ignore[call-overload]
        texts = [p if same_f32(p, v) else f32_text(v) for p, v in zip(printed, items, strict=True)]
        return f"{lead}{tag}:B:f" + "".join("," + t for t in texts)

    return FLOAT_FIELD_RE.sub(fix, tags)


def same_f32(text: str, value: float) -> bool:
    """Return whether decimal ``text`` reads back to exactly the float32 ``value``."""
    try:
        return bool(_F32.unpack(_F32.pack(float(text)))[0] == value or (value != value and text == "nan"))
    except (ValueError, OverflowError):
        return False


def has_float_tag(tags: str) -> bool:
    """Return whether a tags string holds an ``f`` or ``B:f`` field."""
    return _FLOAT_TAG_RE.search(tags) is not None


def f32_text(value: float) -> str:
    """Return the shortest decimal that reads back to the same float32: lossless and short."""
    f = np.float32(value)
    if np.isnan(f):
        return "nan"
    if np.isinf(f):
        return "inf" if f > 0 else "-inf"
    return (
        np.format_float_positional(f, unique=True, trim="-")
        if (f == 0 or 1e-4 <= abs(f) < 1e16)
        else np.format_float_scientific(f, unique=True, trim="-")
    )


def _g_text(text: str) -> str:
    # htslib prints aux floats as C's "%g" of the float promoted to double.
    return f"{float(np.float32(text)):g}"


def sam_tags_text(tags: str) -> str:
    """Return a stored tags string as ``samtools view`` prints it (``%g`` floats)."""
    if not has_float_tag(tags):
        return tags
    out = []
    for field in tags.split("\t"):
        typ = field[3:4]
        if typ == "f":
            field = field[:5] + _g_text(field[5:])
        elif typ == "B" and field[5:6] == "f":
            values = field[6:].split(",")[1:] if field[6:7] == "," else []
            field = field[:6] + "".join("," + _g_text(v) for v in values)
        out.append(field)
    return "\t".join(out)


def _g_float_tags(tags: pa.Array | pa.ChunkedArray) -> pa.Array:
    """:func:`sam_tags_text` over a whole tags column.

    ``f`` fields (one per read for some aligners) are rewritten in columns:
    split into fields, parse, ``%g``, join. The rare rows with ``B:f`` arrays
    go through :func:`sam_tags_text` one by one.
    """
    if isinstance(tags, pa.ChunkedArray):
        tags = tags.combine_chunks()
    original = tags
    fields = pc.split_pattern(tags, "\t")
    flat = pc.list_flatten(fields)
    is_f = pc.match_substring_regex(flat, _F_FIELD_PATTERN)
    if pc.any(is_f).as_py():
        chosen = flat.filter(is_f)
        try:
            parsed = pc.cast(pc.utf8_slice_codeunits(chosen, 5), pa.float64())
        except pa.ArrowInvalid:  # not a number somewhere: one row at a time, as before
            return string_array([sam_tags_text(t) for t in tags.to_pylist()])
        # As _g_text: the float32 the text stands for, printed with %g as a double.
        values = floats(parsed)
        g_text = string_array(np.char.mod("%g", values.astype(np.float32).astype(np.float64)).tolist())
        head = pc.utf8_slice_codeunits(chosen, 0, 5)
        rewritten = pc.binary_join_element_wise(head, g_text, string_scalar(""))
        flat = pc.replace_with_mask(flat, is_f, rewritten)
        offsets = pc.subtract(fields.offsets, fields.offsets[0])
        lists = pa.ListArray.from_arrays(offsets, flat, mask=fields.is_null())
        tags = pc.binary_join(lists, string_scalar("\t"))
    arrays = pc.match_substring_regex(original, _B_F_FIELD_PATTERN)
    if pc.any(arrays).as_py():
        values = tags.to_pylist()
        for i in np.flatnonzero(bools(arrays)):
            values[i] = sam_tags_text(original[i].as_py())
        tags = string_array(values)
    return tags


def sam_lines(table: pa.Table, exact_floats: bool = False) -> pa.Array:
    """Format a record table as SAM lines (no trailing newline).

    Args:
        table: Records with at least the eleven SAM columns and ``tags``.
        exact_floats: Keep the stored exact float text (for feeding htslib
            when writing BAM) instead of samtools' ``%g`` rendering.

    Returns:
        A string array, one SAM line per record.
    """
    if table.num_rows == 0:
        return string_array([]).cast(pa.large_string())
    cols = []
    for name in SAM_COLUMNS:
        col = table.column(name)
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            col = pc.cast(col, pa.string())
        cols.append(col)
    tags = table.column("tags")
    if not exact_floats and pc.any(pc.match_substring_regex(tags, _FLOAT_TAG_PATTERN)).as_py():
        tags = _g_float_tags(tags)
    tab = string_scalar("\t")
    body = pc.binary_join_element_wise(*cols, tab)
    with_tags = pc.binary_join_element_wise(body, tags, tab)
    empty = pc.equal(pc.utf8_length(tags), int_scalar(0, pa.int32()))
    return (
        pc.if_else(empty, body, with_tags).combine_chunks()
        if isinstance(body, pa.ChunkedArray)
        else pc.if_else(empty, body, with_tags)
    )
