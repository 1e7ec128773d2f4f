"""Writing a BAMS3 dataset: chunk objects, then indexes and header, then the manifest (FORMAT.md §8).

The commit protocol in one place, for every writer (``bams3 convert`` and the
Spark job): :func:`prepare_output` refuses or clears the prefix,
:func:`write_window` writes chunk objects (in any order, from any worker:
names are deterministic, so a retried task replaces a failed one's objects),
and :func:`commit_dataset` writes the indexes, the header and, last, the
manifest, whose existence is the commit. Until then readers see an
incomplete dataset, never a mix of old and new.
"""

from __future__ import annotations

import datetime as _dt
import os

import pyarrow as pa
import pyarrow.compute as pc

from bams3_spark import __version__
from bams3_spark.bam.reader import BamInfo
from bams3_spark.exceptions import DatasetExistsError
from bams3_spark.format.chunk import encode_chunk, sha256_hex
from bams3_spark.format.layout import (
    HEADER_NAME,
    MANIFEST_NAME,
    UNPLACED_KEY,
    UNPLACED_NAME,
    WRITER_ENTRIES,
    chunk_path,
    index_path,
    reference_key,
)
from bams3_spark.format.manifest import ChunkInfo, Manifest, ObjectRef, RefEntry, RefIndex
from bams3_spark.io.storage import Storage, is_temporary_name


def write_window(
    storage: Storage,
    table: pa.Table,
    rname: str,
    key: str,
    window: tuple[int, int],
    max_records: int,
    first_part: int = 0,
) -> list[ChunkInfo]:
    """Encode one window's records into one or more chunk objects and write them."""
    infos = []
    for part, offset in enumerate(range(0, table.num_rows, max_records), start=first_part):
        piece = table.slice(offset, max_records)
        data = encode_chunk(piece, rname, window, part)
        rel = chunk_path(key, window[0], window[1], part)
        storage.write_bytes(rel, data)
        pos, end = piece.column("pos"), piece.column("end")
        infos.append(
            ChunkInfo(
                path=rel,
                window_start=window[0],
                window_end=window[1],
                part=part,
                min_start=int(pc.min(pos).as_py()),
                max_start=int(pc.max(pos).as_py()),
                max_end=int(pc.max(end).as_py()),
                records=piece.num_rows,
                bytes=len(data),
                sha256=sha256_hex(data),
            )
        )
    return infos


def prepare_output(storage: Storage, overwrite: bool) -> None:
    """Make the output prefix ready for a new dataset.

    An existing dataset (manifest present) or foreign files are refused unless
    ``overwrite``. The remains of a failed conversion (chunks but no manifest)
    are replaced, so a rerun of a killed conversion just works. When
    overwriting, the old manifest goes first, so a failure while clearing or
    converting leaves an incomplete dataset, never a mix that looks complete.

    Raises:
        DatasetExistsError: If the output is taken and ``overwrite`` is false.
        OSError: If the prefix cannot be written (missing bucket, permissions).
    """
    entries = set(storage.listdir(""))
    if entries:
        complete = MANIFEST_NAME in entries
        # A conversion killed while writing the header or manifest locally also
        # leaves that object's temporary (see io.replacing).
        leftovers = all(e in WRITER_ENTRIES or is_temporary_name(e) for e in entries)
        if not overwrite and (complete or not leftovers):
            what = "a dataset" if complete else "other files"
            raise DatasetExistsError(
                f"{storage.url}: output already holds {what}; use --overwrite to replace it"
            )
        storage.delete(MANIFEST_NAME)
        storage.delete_tree("")
    storage.check_writable()


def commit_dataset(
    storage: Storage,
    info: BamInfo,
    chunks_by_key: dict[str, list[ChunkInfo]],
    chunk_size: int,
    max_records: int,
    source: str,
) -> Manifest:
    """Write the per-reference indexes, the header and, last, the manifest."""
    header_bytes = info.header_text.encode()
    storage.write_bytes(HEADER_NAME, header_bytes)
    header = ObjectRef(HEADER_NAME, len(header_bytes), sha256_hex(header_bytes))
    entries = []
    named = [(reference_key(t, n), n, ln) for t, (n, ln) in enumerate(info.references)]
    named.append((UNPLACED_KEY, UNPLACED_NAME, 0))
    for key, name, length in named:
        chunks = sorted(chunks_by_key.get(key, []), key=lambda c: (c.window_start, c.part))
        index_ref = None
        if chunks:
            raw = RefIndex(name, key, tuple(chunks)).dumps()
            storage.write_bytes(index_path(key), raw)
            index_ref = ObjectRef(index_path(key), len(raw), sha256_hex(raw))
        elif key == UNPLACED_KEY:
            continue
        entries.append(
            RefEntry(
                name=name,
                key=key,
                length=length,
                records=sum(c.records for c in chunks),
                chunks=len(chunks),
                bytes=sum(c.bytes for c in chunks),
                index=index_ref,
            )
        )
    manifest = Manifest(
        references=tuple(entries),
        header=header,
        chunk_size=chunk_size,
        max_chunk_records=max_records,
        sample=sample_name(info.header_text),
        source=os.path.basename(source.rstrip("/")),
        created_by=f"bams3-spark {__version__}",
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    storage.write_bytes(MANIFEST_NAME, manifest.dumps())
    return manifest


def sample_name(header_text: str) -> str | None:
    """Return the SM of the header's read groups when they agree, else None."""
    samples = set()
    for line in header_text.splitlines():
        if line.startswith("@RG"):
            for field in line.split("\t")[1:]:
                if field.startswith("SM:"):
                    samples.add(field[3:])
    return samples.pop() if len(samples) == 1 else None
