"""BAM records straight into Arrow record tables: the binary layout decoded in columns.

The converter used to let htslib format every record as SAM text and split the
text again; here the raw records (SAM/BAM spec §4.2) are decoded with numpy
gathers over all the records of a window at once, and each column is built
as an Arrow array, with no Python work per record:

* fixed fields by one gather of 32 bytes per record;
* QNAME, SEQ, QUAL and aux strings as Arrow views into the buffer, copied by
  Arrow's casts;
* CIGAR text formatted once per distinct CIGAR (they repeat a lot);
* aux fields walked field by field across all records (``k``-th field of
  every record at once), then rendered per type: integers by Arrow's cast,
  floats once per distinct value, joined with tabs.

The text of every column is exactly what ``samtools view`` prints (htslib's
``sam_format1``), except that float aux values keep their exact text
(FORMAT.md §4), as :func:`bams3_spark.bam.reader.window_table` stores them;
``tests/bam/test_records.py`` compares both on every conformance file.
Records this decoder does not render itself (CIGARs of more than 65,535
operations kept in a ``CG`` tag, bytes SAM text cannot carry, malformed
records) raise :class:`NotDecodable`, and the caller lets htslib do them.
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from bams3_spark.format.sam import compute_end, f32_text, same_f32
from bams3_spark.format.schema import RECORD_SCHEMA

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

#: Bytes of padding past the records, so that 4-byte gathers never run off the buffer.
PAD = 16
_SEQ_CHARS = np.frombuffer(b"=ACMGRSVTWYHKDBN", dtype=np.uint8)
#: Both bases of a packed SEQ byte at once (two ASCII bytes, little-endian).
_BASE_PAIRS = _SEQ_CHARS[np.arange(256) >> 4].astype("<u2") | (
    _SEQ_CHARS[np.arange(256) & 15].astype("<u2") << 8
)
_CIGAR_CHARS = np.frombuffer(b"MIDNSHP=X", dtype=np.uint8)
_POW10 = 10 ** np.arange(10, dtype=np.int64)
#: Aux value sizes by type byte: fixed sizes; -1 NUL-terminated (Z, H); -2 arrays (B); 0 invalid.
_AUX_SIZE = np.zeros(256, dtype=np.int64)
for _t, _n in (("A", 1), ("c", 1), ("C", 1), ("s", 2), ("S", 2), ("i", 4), ("I", 4), ("f", 4)):
    _AUX_SIZE[ord(_t)] = _n
_AUX_SIZE[ord("Z")] = _AUX_SIZE[ord("H")] = -1
_AUX_SIZE[ord("B")] = -2
_ARRAY_ITEM = {ord("c"): "b", ord("C"): "B", ord("s"): "h", ord("S"): "H", ord("i"): "i", ord("I"): "I",
               ord("f"): "f"}
#: Element size of a B array by subtype byte (0: invalid).
_ARRAY_ITEM_SIZE = np.zeros(256, dtype=np.int64)
for _code, _fmt in _ARRAY_ITEM.items():
    _ARRAY_ITEM_SIZE[_code] = array.array(_fmt).itemsize
_INT_TYPES = {ord("c"): np.int8, ord("C"): np.uint8, ord("s"): np.int16, ord("S"): np.uint16,
              ord("i"): np.int32, ord("I"): np.uint32}


#: Masks keeping the first 0..4 bytes of a little-endian word.
_MASKS = np.array([0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF], dtype="<u4")


class NotDecodable(Exception):
    """The records hold something this decoder leaves to htslib (see the module notes)."""


def padded(data: bytes | bytearray | memoryview) -> U8:
    """Copy record bytes into a numpy buffer with :data:`PAD` zero bytes after them."""
    out = np.zeros(len(data) + PAD, dtype=np.uint8)
    out[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return out


def words_of(buf: U8) -> npt.NDArray[np.uint32]:
    """View a padded buffer as little-endian uint32 starting at *every* byte offset."""
    return np.ndarray((len(buf) - 3,), dtype="<u4", buffer=buf, strides=(1,))


def record_keys(buf: U8, offsets: I64) -> tuple[I64, I64]:
    """(refID, 0-based pos) of the records starting at ``offsets`` (their block_size field)."""
    words = words_of(buf)
    tid = words[offsets + 4].view(np.int32).astype(np.int64)
    return tid, words[offsets + 8].view(np.int32).astype(np.int64)


def _views(
    buf: U8, words: npt.NDArray[np.uint32], starts: I64, lengths: I64, arrow_buf: pa.Buffer
) -> pa.Array:
    """An Arrow ``binary_view`` array of ``buf[starts[i] : starts[i] + lengths[i]]``.

    Arrow's layout is 16 bytes per value: int32 length, then the bytes inline
    when at most 12, else a 4-byte prefix, buffer index 0 and an int32 offset.
    """
    n = len(starts)
    views = np.zeros((n, 4), dtype="<u4")
    views[:, 0] = lengths
    short = lengths <= 12
    idx: slice | I64
    if short.all():
        idx, st, ln = slice(None), starts, lengths
    else:
        idx = np.flatnonzero(short)
        st, ln = starts[idx], lengths[idx]
        far = np.flatnonzero(~short)
        views[far, 1] = words[starts[far]]
        views[far, 3] = starts[far]
    if len(ln):
        for j in range(3):
            views[idx, 1 + j] = words[st + 4 * j] & _MASKS[np.clip(ln - 4 * j, 0, 4)]
    return pa.Array.from_buffers(pa.binary_view(), n, [None, pa.py_buffer(views), arrow_buf])


def _contiguous(buf: U8, words: npt.NDArray[np.uint32], starts: I64, lengths: I64, arrow_buf: pa.Buffer
                ) -> tuple[U8, I64]:
    """Copy slices of ``buf`` end to end (by Arrow); return (bytes, offsets with n + 1 entries)."""
    if len(buf) > (1 << 31) - 1:
        raise NotDecodable("buffer too large for 32-bit views")
    arr = pc.cast(_views(buf, words, starts, lengths, arrow_buf), pa.large_binary())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[: len(starts) + 1]
    data = (np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8))
    return data[: int(offsets[-1])], offsets


def _strings(data: U8, offsets: I64) -> pa.Array:
    """A ``string`` array from bytes and int64 offsets (ASCII checked by the callers)."""
    return pa.Array.from_buffers(
        pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    ).cast(pa.string())


def _with_star(data: U8, offsets: I64, star: npt.NDArray[np.bool_]) -> pa.Array:
    """Strings ``data[offsets[i]:offsets[i + 1]]``, with ``*`` where ``star``."""
    if not star.any():
        return _strings(data, offsets)
    return _pick(data, offsets[:-1], np.diff(offsets), star)


def _pick(data: U8, starts: I64, lengths: I64, star: npt.NDArray[np.bool_] | None = None) -> pa.Array:
    """Strings ``data[starts[i]:starts[i] + lengths[i]]`` (``*`` where ``star``), copied by Arrow."""
    buf = np.zeros(len(data) + 1 + PAD, dtype=np.uint8)
    buf[: len(data)] = data
    buf[len(data)] = ord("*")
    if star is not None and star.any():
        starts = np.where(star, len(data), starts)
        lengths = np.where(star, 1, lengths)
    views = _views(buf, words_of(buf), starts, lengths, pa.py_buffer(buf))
    return pc.cast(views, pa.string())


def _check_text(data: U8, low: int, what: str) -> None:
    # SAM text is printable ASCII (QNAME without spaces); anything else is left to htslib.
    if len(data) and (int(data.min()) < low or int(data.max()) > 126):
        raise NotDecodable(f"{what} with bytes SAM text cannot hold")


def decode_records(buf: U8, offsets: I64, names: Sequence[str]) -> pa.Table:
    """Decode BAM records into a record table (``RECORD_SCHEMA``).

    Args:
        buf: Record bytes with :data:`PAD` zero bytes after them (:func:`padded`).
        offsets: Start of each record (its ``block_size`` field) in ``buf``.
        names: Reference names of the header, by refID.

    Returns:
        One row per record, in order, every column as ``samtools view`` prints
        it (floats exact, FORMAT.md §4), ``end`` computed.

    Raises:
        NotDecodable: For records left to htslib (see the module notes).
    """
    n = len(offsets)
    if n == 0:
        return RECORD_SCHEMA.empty_table()
    offsets = offsets.astype(np.int64, copy=False)
    words = words_of(buf)
    arrow_buf = pa.py_buffer(buf)
    fixed = words[offsets[:, None] + np.arange(0, 36, 4)]  # (n, 9) uint32
    block = fixed[:, 0].astype(np.int64)
    tid = fixed[:, 1].view(np.int32).astype(np.int64)
    pos = fixed[:, 2].view(np.int32).astype(np.int64)
    l_name = (fixed[:, 3] & 0xFF).astype(np.int64)
    mapq = ((fixed[:, 3] >> 8) & 0xFF).astype(np.int32)
    n_cigar = (fixed[:, 4] & 0xFFFF).astype(np.int64)
    flag = (fixed[:, 4] >> 16).astype(np.int32)
    l_seq = fixed[:, 5].view(np.int32).astype(np.int64)
    next_tid = fixed[:, 6].view(np.int32).astype(np.int64)
    next_pos = fixed[:, 7].view(np.int32).astype(np.int64)
    tlen = fixed[:, 8].view(np.int32)

    rec_end = offsets + 4 + block
    name_at = offsets + 36
    cigar_at = name_at + l_name
    seq_at = cigar_at + 4 * n_cigar
    qual_at = seq_at + (l_seq + 1) // 2
    aux_at = qual_at + l_seq
    n_ref = len(names)
    if (
        (l_seq < 0).any() or (l_name < 1).any() or (aux_at > rec_end).any()
        or (tid < -1).any() or (tid >= n_ref).any() or (next_tid < -1).any() or (next_tid >= n_ref).any()
        or (buf[name_at + l_name - 1] != 0).any()
    ):
        raise NotDecodable("malformed record")

    qdata, qoff = _contiguous(buf, words, name_at, l_name - 1, arrow_buf)
    _check_text(qdata, 33, "QNAME")
    qname = _strings(qdata, qoff)

    cigar_ops = _contiguous(buf, words, cigar_at, 4 * n_cigar, arrow_buf)
    cigar = _cigar_text(*cigar_ops)

    ref_names = pa.array(["*", *names], pa.string())
    rname = pc.take(ref_names, pa.array(tid + 1))
    rnext_idx = np.where((next_tid == tid) & (next_tid >= 0), n_ref + 1, next_tid + 1)
    rnext = pc.take(pa.array(["*", *names, "="], pa.string()), pa.array(rnext_idx))

    no_seq = l_seq == 0
    packed, poff = _contiguous(buf, words, seq_at, (l_seq + 1) // 2, arrow_buf)
    bases = _BASE_PAIRS[packed].view(np.uint8)
    # Odd lengths leave an unused half byte: each SEQ starts at twice its packed offset.
    seq = _pick(bases, 2 * poff[:-1], l_seq, no_seq)

    qual_raw, qoff2 = _contiguous(buf, words, qual_at, l_seq, arrow_buf)
    no_qual = no_seq.copy()
    has = ~no_seq
    no_qual[has] = qual_raw[qoff2[:-1][has]] == 0xFF
    shown = np.repeat(~no_qual, np.diff(qoff2))
    if len(qual_raw) and int(qual_raw[shown].max(initial=0)) > 93:
        raise NotDecodable("quality above 93")
    qual = _with_star(qual_raw + np.uint8(33), qoff2, no_qual)

    tags = _aux_text(buf, words, aux_at, rec_end - aux_at, arrow_buf)

    pos_col = pa.array((pos + 1).astype(np.int32))
    flag_col = pa.array(flag)
    columns = {
        "qname": qname,
        "flag": flag_col,
        "rname": rname,
        "pos": pos_col,
        "end": compute_end(pos_col, flag_col, cigar),
        "mapq": pa.array(mapq),
        "cigar": cigar,
        "rnext": rnext,
        "pnext": pa.array((next_pos + 1).astype(np.int32)),
        "tlen": pa.array(tlen),
        "seq": seq,
        "qual": qual,
        "tags": tags,
    }
    return pa.table([columns[f.name] for f in RECORD_SCHEMA], schema=RECORD_SCHEMA)


def _cigar_text(data: U8, offsets: I64) -> pa.Array:
    """SAM CIGAR strings of the records' CIGAR operations, formatted once per distinct CIGAR."""
    n = len(offsets) - 1
    binary = pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))]
    )
    enc = pc.dictionary_encode(binary)
    distinct = enc.dictionary
    bufs = distinct.buffers()
    doff = np.frombuffer(bufs[1], dtype=np.int64)[distinct.offset: distinct.offset + len(distinct) + 1]
    raw = (
        np.frombuffer(bufs[2], dtype=np.uint8)[doff[0]: doff[-1]] if bufs[2] is not None
        else np.zeros(0, np.uint8)
    )
    doff = doff - doff[0]
    ops = np.frombuffer(raw.tobytes(), dtype="<u4")
    op_len = (ops >> 4).astype(np.int64)
    op_code = (ops & 0x0F).astype(np.int64)
    if (op_code > 8).any():
        raise NotDecodable("invalid CIGAR operation")
    n_ops = np.diff(doff) // 4
    # htslib keeps CIGARs longer than 65,535 operations in a CG tag and puts
    # "<l_seq>S<rlen>N" in the record: records with any two-operation S-then-N
    # CIGAR (the placeholder, or a rare real one) are left to htslib.
    two = np.flatnonzero(n_ops == 2)
    if len(two):
        first = doff[two] // 4
        fake = (op_code[first] == 4) & (op_code[first + 1] == 3)
        if fake.any():
            raise NotDecodable("CIGAR kept in a CG tag")
    digits = np.ones(len(ops), dtype=np.int64)
    for d in range(1, 10):
        digits += op_len >= _POW10[d]
    width = digits + 1
    ends = np.cumsum(width)
    starts = ends - width
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    for d in range(10):
        sel = digits > d
        if not sel.any():
            break
        out[starts[sel] + digits[sel] - 1 - d] = (48 + (op_len[sel] // _POW10[d]) % 10).astype(np.uint8)
    out[ends - 1] = _CIGAR_CHARS[op_code]
    text_off = np.concatenate(([0], ends))[np.concatenate(([0], np.cumsum(n_ops)))]
    texts = _with_star(out, text_off.astype(np.int64), n_ops == 0)
    return pc.take(texts, enc.indices)


def _aux_text(buf: U8, words: npt.NDArray[np.uint32], starts: I64, lengths: I64, arrow_buf: pa.Buffer
              ) -> pa.Array:
    """The optional fields of every record as ``samtools view`` prints them (floats exact), tab-joined."""
    n = len(starts)
    if not lengths.any():
        return pa.array(np.full(n, "", dtype=object), pa.string())
    raw, off = _contiguous(buf, words, starts, lengths, arrow_buf)
    ab = np.zeros(len(raw) + PAD, dtype=np.uint8)
    ab[: len(raw)] = raw
    aw = words_of(ab)
    zeros = np.flatnonzero(ab[: len(raw)] == 0)
    cur = off[:-1].copy()
    stop = off[1:]
    f_rec, f_k, f_at, f_size = [], [], [], []
    active = np.flatnonzero(cur < stop)
    k = 0
    while len(active):
        c = cur[active]
        if (c + 3 > stop[active]).any():
            raise NotDecodable("truncated aux field")
        t = ab[c + 2].astype(np.int64)
        size = _AUX_SIZE[t]
        if (size == 0).any():
            raise NotDecodable("unknown aux type")
        text = np.flatnonzero(size == -1)
        if len(text):
            hit = np.searchsorted(zeros, c[text] + 3)
            if (hit >= len(zeros)).any():
                raise NotDecodable("unterminated aux string")
            size[text] = zeros[hit] - (c[text] + 3) + 1
        arrays = np.flatnonzero(size == -2)
        if len(arrays):
            isz = _ARRAY_ITEM_SIZE[ab[c[arrays] + 3]]
            if (isz == 0).any():
                raise NotDecodable("unknown aux array type")
            size[arrays] = 5 + aw[c[arrays] + 4].astype(np.int64) * isz
        nxt = c + 3 + size
        if (nxt > stop[active]).any():
            raise NotDecodable("aux field past the record end")
        f_rec.append(active)
        f_k.append(np.full(len(active), k, np.int64))
        f_at.append(c)
        f_size.append(size)
        cur[active] = nxt
        active = active[nxt < stop[active]]
        k += 1
    rec = np.concatenate(f_rec)
    kk = np.concatenate(f_k)
    at = np.concatenate(f_at)
    size = np.concatenate(f_size)
    counts = np.bincount(rec, minlength=n)
    field_ptr = np.concatenate(([0], np.cumsum(counts)))
    order = np.empty(len(rec), dtype=np.int64)
    order[field_ptr[rec] + kk] = np.arange(len(rec))  # fields in record order
    rec, at, size = rec[order], at[order], size[order]

    # Fields repeat a lot (NM:i:0, tp:A:P, RG:Z:...): render each distinct
    # field (its raw bytes) once. Fields of at most 8 bytes (every number,
    # short strings) are keyed by those bytes as one uint64; longer ones by
    # their bytes as binary.
    total = 3 + size
    short = total <= 8
    ids = np.empty(len(rec), dtype=np.int64)
    distinct: list[pa.Array] = []
    n_distinct = 0
    if short.any():
        sel = np.flatnonzero(short)
        a0 = at[sel]
        mask_lo = _MASKS[np.minimum(total[sel], 4)]
        mask_hi = _MASKS[np.clip(total[sel] - 4, 0, 4)]
        high = (aw[a0 + 4] & mask_hi).astype(np.uint64) << np.uint64(32)
        keys = (aw[a0] & mask_lo).astype(np.uint64) | high
        enc = pc.dictionary_encode(pa.array(keys))
        ids[sel] = enc.indices.to_numpy(zero_copy_only=False)
        uniq = enc.dictionary.to_numpy(zero_copy_only=False).astype("<u8")
        first = np.zeros(len(uniq), dtype=np.int64)
        first[ids[sel][::-1]] = np.arange(len(sel))[::-1]  # a field of each distinct key
        lengths = total[sel][first]
        key_bytes = uniq.view(np.uint8).reshape(-1, 8)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        packed = key_bytes[np.repeat(np.arange(len(uniq)), lengths),
                           np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)]
        distinct.append(pa.Array.from_buffers(
            pa.large_binary(), len(uniq), [None, pa.py_buffer(offsets), pa.py_buffer(packed)]
        ))
        n_distinct = len(uniq)
    if not short.all():
        sel = np.flatnonzero(~short)
        fields = pc.cast(_views(ab, aw, at[sel], total[sel], pa.py_buffer(ab)), pa.large_binary())
        enc = pc.dictionary_encode(fields)
        ids[sel] = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64) + n_distinct
        distinct.append(enc.dictionary)
    texts = _field_texts(pa.concat_arrays(distinct))
    taken = pc.take(texts, pa.array(ids))
    lists = pa.LargeListArray.from_arrays(pa.array(field_ptr), taken)
    return pc.binary_join(lists, pa.scalar("\t", pa.large_string())).cast(pa.string())


def _buffers(arr: pa.Array) -> tuple[U8, I64]:
    """(bytes, int64 offsets) of a string or binary array."""
    arr = arr.cast(pa.large_binary())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return data[offsets[0]: offsets[-1]], offsets - offsets[0]


def _field_texts(distinct: pa.Array) -> pa.Array:
    """SAM text of distinct raw aux fields (tag, type, value bytes)."""
    data, off = _buffers(distinct)
    db = np.zeros(len(data) + PAD, dtype=np.uint8)
    db[: len(data)] = data
    dw = words_of(db)
    at = off[:-1]
    size = np.diff(off) - 3
    typ = db[at + 2]
    parts: list[pa.Array] = []
    where: list[I64] = []

    def prefixed(sel: I64, letter: bytes, values: pa.Array) -> None:
        m = len(sel)
        pre = np.empty((m, 5), dtype=np.uint8)
        pre[:, 0] = db[at[sel]]
        pre[:, 1] = db[at[sel] + 1]
        pre[:, 2] = ord(":")
        pre[:, 3] = letter[0]
        pre[:, 4] = ord(":")
        _check_text(pre[:, :2].ravel(), 33, "aux tag")
        head = _strings(pre.ravel(), np.arange(0, 5 * m + 1, 5, dtype=np.int64))
        parts.append(pc.binary_join_element_wise(head, values.cast(pa.string()), ""))
        where.append(sel)

    for code, np_type in _INT_TYPES.items():
        sel = np.flatnonzero(typ == code)
        if len(sel):
            width = np.dtype(np_type).itemsize
            raw_v = dw[at[sel] + 3] & _MASKS[width]
            vals = raw_v.astype(f"<u{width}").view(np_type).astype(np.int64)
            prefixed(sel, b"i", pa.array(vals).cast(pa.string()))
    sel = np.flatnonzero(typ == ord("A"))
    if len(sel):
        chars = db[at[sel] + 3]
        _check_text(chars, 33, "aux character")
        prefixed(sel, b"A", _strings(chars.copy(), np.arange(len(sel) + 1, dtype=np.int64)))
    sel = np.flatnonzero(typ == ord("f"))
    if len(sel):
        prefixed(sel, b"f", float_texts(dw[at[sel] + 3]))
    for letter in (b"Z", b"H"):
        sel = np.flatnonzero(typ == letter[0])
        if len(sel):
            vdata, voff = _contiguous(db, dw, at[sel] + 3, size[sel] - 1, pa.py_buffer(db))
            _check_text(vdata, 32, "aux text")
            prefixed(sel, letter, _strings(vdata, voff))
    sel = np.flatnonzero(typ == ord("B"))
    if len(sel):
        prefixed(sel, b"B", pa.array([_array_text(db, int(a)) for a in at[sel]], pa.string()))
    every = pa.concat_arrays([p.cast(pa.large_string()) for p in parts])
    order = np.empty(len(distinct), dtype=np.int64)
    order[np.concatenate(where)] = np.arange(len(distinct))
    return pc.take(every, pa.array(order))


def _array_text(ab: U8, at: int) -> str:
    """A ``B`` array's value text after ``TG:B:``: subtype, then ``,value`` per element."""
    sub = int(ab[at + 3])
    count = int(np.frombuffer(ab[at + 4: at + 8].tobytes(), "<u4")[0])
    fmt = _ARRAY_ITEM[sub]
    size = array.array(fmt).itemsize
    values = array.array(fmt, ab[at + 8: at + 8 + count * size].tobytes())
    if sub == ord("f"):
        bits = np.frombuffer(values.tobytes(), dtype="<u4")
        items = float_texts(bits).to_pylist() if count else []
    else:
        items = [str(v) for v in values]
    return chr(sub) + "".join("," + t for t in items)


def float_texts(bits: npt.NDArray[np.uint32]) -> pa.Array:
    """Exact text of float32 values (given as their bits), as stored in ``tags`` (FORMAT.md §4).

    htslib's own rendering is kept when it reads back to the same float32, else
    the shortest exact decimal, as :func:`bams3_spark.format.sam.exact_float_tags`
    does. htslib formats each *distinct* value once (through pysam, so its
    rounding is htslib's to the last digit).
    """
    distinct, inverse = np.unique(bits, return_inverse=True)
    values = distinct.view(np.float32)
    printed = htslib_float_texts(values)
    texts = [p if same_f32(p, float(v)) else f32_text(float(v)) for p, v in zip(printed, values, strict=True)]
    return pc.take(pa.array(texts, pa.string()), pa.array(inverse.ravel().astype(np.int64)))


def htslib_float_texts(values: npt.NDArray[np.float32]) -> list[str]:
    """How htslib prints float32 values in SAM text (its ``%g``-like ``kputd``)."""
    import pysam

    if len(values) == 0:
        return []
    seg = pysam.AlignedSegment(pysam.AlignmentHeader.from_dict({"SQ": [{"SN": "x", "LN": 1}]}))
    seg.query_name = "x"
    seg.flag = 4
    seg.set_tag("XX", array.array("f", values.astype(np.float32).tobytes()))
    text: str = seg.to_string()
    field = text.split("\t")[11]
    return field[len("XX:B:f,"):].split(",")
