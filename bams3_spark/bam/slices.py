"""Ranged BAM slices: the part of a BAM, local or remote, that a set of windows needs.

A remote BAM (S3 or any fsspec store) is never downloaded whole. Planning reads
its index and header only (:func:`inspect_source`); a task then downloads the
header blocks plus one byte range (from :mod:`bams3_spark.bam.index`) through
the storage layer (plain ranged GETs, so any S3-compatible endpoint works) and
writes them at their original offsets into a *sparse* local file of the same
layout, with the index beside it (:func:`local_slice`). pysam then fetches
windows from that file exactly as from a local BAM. htslib never touches the
holes; if it ever did, it would fail on them (zeros are not a BGZF block),
never read wrong records.

htslib's own S3/HTTP support is not used: pysam wheels load libcurl at run
time (absent from slim images), custom endpoints need htslib-specific
configuration, and against moto its second ranged request stalls behind the
first, still-open response. Local (and ``file://``) inputs are read in place.
"""

from __future__ import annotations

import atexit
import os
import posixpath
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from bams3_spark.bam.index import MAX_BLOCK, BinIndex, parse_index
from bams3_spark.bam.reader import BamInfo, inspect_bam
from bams3_spark.exceptions import Bams3Error, InputFormatError, one_line
from bams3_spark.io.bgzf import EOF_BLOCK
from bams3_spark.io.storage import CountingStorage, Storage, shared_storage, split_url, storage_for_file

#: Give up looking for the end of a header after this many bytes.
MAX_HEADER_PREFIX = 64 << 20
#: Download slices in ranged GETs of this size (bounds task memory).
FETCH_PIECE = 16 << 20


@dataclass(frozen=True)
class BamSource:
    """How a task reaches an input BAM: in place (local) or by ranged reads."""

    url: str
    storage_options: dict[str, Any]
    size: int
    index_name: str
    index_size: int
    header_bytes: int
    local_path: str | None = None

    @property
    def index_suffix(self) -> str:
        return ".csi" if self.index_name.endswith(".csi") else ".bai"


def _index_candidates(name: str) -> list[str]:
    # Where htslib and samtools put an index: x.bam.bai, x.bai, x.bam.csi.
    names = [name + ".bai"]
    if name.endswith(".bam"):
        names.append(name[:-4] + ".bai")
    names.append(name + ".csi")
    return names


def _no_index(url: str) -> InputFormatError:
    return InputFormatError(
        f"{url}: no BAI/CSI index next to it; run 'samtools index' on it (and upload the .bai "
        "beside it), or use 'bams3 convert', which streams unindexed sorted input"
    )


@contextmanager
def _header_stub(
    storage: Storage, name: str, size: int, index: bytes, suffix: str, prefix: int
) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bams3-plan-") as tmp:
        stub = os.path.join(tmp, "input.bam")
        with open(stub, "wb") as fh:
            _fetch_into(storage, name, fh, 0, prefix)
            if prefix < size:
                fh.write(EOF_BLOCK)
        with open(stub + suffix, "wb") as fh:
            fh.write(index)
        yield stub


_PYSAM_LOCK = threading.Lock()


def _inspect(path: str) -> BamInfo:
    # inspect_bam runs samtools inside pysam, which captures its output by
    # redirecting the process's stdout: one at a time across planning threads.
    with _PYSAM_LOCK:
        return inspect_bam(path)


def _inspect_remote(url: str, opts: dict[str, Any]) -> tuple[BamInfo, BinIndex, BamSource]:
    storage, name = storage_for_file(url, **opts)
    if not storage.exists(name):
        raise FileNotFoundError(f"{url}: not found")
    size = storage.size(name)
    index_name = next((n for n in _index_candidates(name) if storage.exists(n)), None)
    if index_name is None:
        raise _no_index(url)
    index_bytes = storage.read_bytes(index_name)
    index = parse_index(index_bytes, storage.url_of(index_name))
    magic = storage.read_bytes(name, 0, min(size, 18))
    if len(magic) < 18 or magic[:4] != b"\x1f\x8b\x08\x04" or magic[12:14] != b"BC":
        raise InputFormatError(f"{url}: not a BAM file")
    first = index.first_record_offset()
    # The header ends where the first record starts; without placed reads, probe.
    prefix = min(size, (first >> 16) + MAX_BLOCK if first else 1 << 20)
    suffix = ".csi" if index_name.endswith(".csi") else ".bai"
    while True:
        problem = ""
        with _header_stub(storage, name, size, index_bytes, suffix, prefix) as stub:
            try:
                info = _inspect(stub)
                break
            except (Bams3Error, OSError, ValueError) as exc:
                problem = one_line(exc).replace(stub + ": ", "").replace(stub, url)
        if prefix >= size or prefix >= MAX_HEADER_PREFIX:
            raise InputFormatError(f"{url}: cannot read the BAM header ({problem})")
        prefix = min(size, prefix * 2)
    info = replace(info, path=url)
    source = BamSource(url, dict(opts), size, index_name, len(index_bytes), prefix)
    return info, index, source


def inspect_source(url: str, opts: dict[str, Any]) -> tuple[BamInfo, BinIndex, BamSource]:
    """Read a BAM's header and index, without its records: what planning a conversion needs.

    Args:
        url: Local path, ``file://`` or any fsspec URL of a BAM with a BAI/CSI index beside it.
        opts: fsspec options for a remote BAM.

    Returns:
        The header facts, the parsed index and how tasks reach the BAM.

    Raises:
        InputFormatError: If it is not a BAM, has no index, or its header is unreadable.
        OSError: For storage failures.
    """
    if split_url(url)[0] == "file":
        return _inspect_local(url)
    return _inspect_remote(url, opts)


def _inspect_local(url: str) -> tuple[BamInfo, BinIndex, BamSource]:
    path = split_url(url)[1]
    info = _inspect(path)
    if not info.has_index:
        raise _no_index(url)
    folder, name = os.path.split(path)
    index_name = next((n for n in _index_candidates(name) if os.path.exists(os.path.join(folder, n))), None)
    if index_name is None:
        raise InputFormatError(
            f"{url}: the Spark job converts BAM with a .bai/.csi index only; use 'bams3 convert'"
        )
    with open(os.path.join(folder, index_name), "rb") as fh:
        raw = fh.read()
    index = parse_index(raw, os.path.join(folder, index_name))
    size = os.path.getsize(path)
    return info, index, BamSource(url, {}, size, index_name, len(raw), 0, local_path=path)


def _fetch_into(storage: Storage, name: str, fh: Any, lo: int, hi: int) -> None:
    fh.seek(lo)
    pos = lo
    while pos < hi:
        piece = storage.read_bytes(name, pos, min(hi, pos + FETCH_PIECE))
        if not piece:
            raise OSError(f"{storage.url_of(name)}: shorter than expected (changed during the job?)")
        fh.write(piece)
        pos += len(piece)


# Per executor process (Python workers are reused): every task of a sample
# needs the same index and header bytes, so each is downloaded once (storage
# clients are shared per process too, by io.shared_storage).
_INDEX_CACHE: dict[tuple[str, int], str] = {}
_HEADER_CACHE: dict[tuple[str, int], bytes] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_DIR: list[str] = []


def _cached_header(source: BamSource, storage: Storage, name: str) -> bytes:
    """Return the input's first ``header_bytes`` bytes (downloaded once per executor process)."""
    key = (storage.url_of(name), source.size)
    with _CACHE_LOCK:
        data = _HEADER_CACHE.get(key)
        if data is not None and len(data) == source.header_bytes:
            return data
    data = storage.read_bytes(name, 0, source.header_bytes)
    if len(data) != source.header_bytes:
        raise OSError(f"{storage.url_of(name)}: shorter than expected (changed during the job?)")
    with _CACHE_LOCK:
        if len(_HEADER_CACHE) > 64:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[key] = data
    return data


def _cached_index(source: BamSource, storage: Storage) -> str:
    """Download an input's index once per executor process; return its local path."""
    key = (storage.url_of(source.index_name), source.index_size)
    with _CACHE_LOCK:
        path = _INDEX_CACHE.get(key)
        if path and os.path.exists(path):
            return path
        if not _CACHE_DIR:
            _CACHE_DIR.append(tempfile.mkdtemp(prefix="bams3-index-cache-"))
            atexit.register(shutil.rmtree, _CACHE_DIR[0], True)
        path = os.path.join(_CACHE_DIR[0], uuid.uuid4().hex + source.index_suffix)
        with open(path, "wb") as fh:
            fh.write(storage.read_bytes(source.index_name))
        _INDEX_CACHE[key] = path
        return path


@contextmanager
def local_slice(source: BamSource, byte_range: tuple[int, int] | None) -> Iterator[tuple[str, int, int]]:
    """Yield (local BAM path, bytes downloaded, requests made) holding the header and ``byte_range`` of a BAM.

    A local source is yielded as it is (nothing downloaded); a remote one
    becomes a sparse local file of the same layout (see the module notes),
    deleted afterwards. The figures count what this call downloaded: the
    header and index only when this process had not cached them yet.
    """
    src = source
    if src.local_path is not None:
        yield src.local_path, 0, 0
        return
    folder, name = posixpath.split(src.url)
    storage = CountingStorage(shared_storage(folder, **src.storage_options))
    with tempfile.TemporaryDirectory(prefix="bams3-slice-") as tmp:
        stub = os.path.join(tmp, "input.bam")
        end = src.header_bytes
        with open(stub, "wb") as fh:
            header = _cached_header(src, storage, name)
            fh.write(header)
            if byte_range is not None:
                lo, hi = byte_range
                lo = max(lo, src.header_bytes)
                if lo < hi:
                    _fetch_into(storage, name, fh, lo, hi)
                end = max(end, hi)
            if end < src.size:
                # The holes stay sparse; only the EOF marker htslib checks is added.
                fh.seek(end)
                fh.write(EOF_BLOCK)
        os.symlink(_cached_index(src, storage), stub + src.index_suffix)
        yield stub, storage.bytes_read, storage.requests
