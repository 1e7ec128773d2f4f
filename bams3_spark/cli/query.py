"""Sub-commands that read datasets: query, export, chunks, cat.

Heavy modules (pyarrow, the query engine) are imported inside the handlers so
that building the parser stays fast for every other sub-command.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from typing import Any

from bams3_spark.cli.common import (
    add_storage_flags,
    intermixed,
    open_dataset_arg,
    open_output,
    resolve_parallel,
    storage_options,
    workers_value,
)
from bams3_spark.cli.progress import progress_for

DEFAULT_PARALLEL = 16
#: What ``bams3 cat`` reads from when given this name (``aws s3 cp URL - | bams3 cat -``).
STDIN = "-"


def add_parsers(sub: Any) -> None:
    """Add the reading sub-commands to the ``bams3`` parser."""
    p = sub.add_parser(
        "query",
        add_help=False,  # -h is --header, as in samtools view
        help="records overlapping regions, exactly as samtools view",
        description=(
            "Print the records overlapping REGIONs as SAM (as 'samtools view'); with no REGION, every "
            "record. Regions use samtools syntax: chr1, chr1:1000, chr1:1,000-2,000 (1-based, "
            "inclusive), {NAME:WITH:COLONS}:1-100, '*' for unplaced unmapped reads. Several regions are "
            "answered in the given order; a record overlapping two of them is printed twice, as "
            "samtools view (without -M) does."
        ),
    )
    intermixed(p)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("dataset", help="dataset prefix (directory or s3://bucket/prefix)")
    p.add_argument("regions", nargs="*", metavar="REGION", help="samtools region strings")
    p.add_argument("-c", "--count", action="store_true", help="print only the number of records (view -c)")
    p.add_argument("-h", "--header", action="store_true", help="include the SAM header")
    p.add_argument("-o", "--output", metavar="OUT.sam|OUT.bam", help="output file (BAM if .bam)")
    p.add_argument(
        "--filter", metavar="EXPR", help="keep records matching EXPR, e.g. 'mapq >= 30 and flag & 1024 == 0'"
    )
    p.add_argument(
        "--regions-file",
        metavar="BED",
        help="records overlapping BED intervals (as samtools view --regions-file)",
    )
    _add_parallel(p)
    p.add_argument("--explain", action="store_true", help="print the plan and exit")
    p.add_argument("--stats", action="store_true", help="report requests and bytes read on stderr")
    _add_quiet(p)
    add_storage_flags(p)
    p.set_defaults(handler=_query)

    p = sub.add_parser("export", help="write a whole dataset back to BAM or SAM")
    p.add_argument("dataset", help="dataset prefix (directory or s3://bucket/prefix)")
    p.add_argument("output", metavar="OUT.bam|OUT.sam", help="output file ('-' for SAM on stdout)")
    _add_parallel(p)
    _add_quiet(p)
    add_storage_flags(p)
    p.set_defaults(handler=_export)

    p = sub.add_parser(
        "chunks",
        help="list chunk object URLs, one per line (for GNU parallel, Nextflow, Snakemake, AWS Batch)",
    )
    intermixed(p)
    p.add_argument("dataset", help="dataset prefix (directory or s3://bucket/prefix)")
    p.add_argument("regions", nargs="*", metavar="REGION", help="only chunks of these regions")
    p.add_argument("-l", "--long", action="store_true", help="add reference, window, part, records, bytes")
    p.add_argument(
        "--shard",
        type=shard_value,
        metavar="I/N",
        help=(
            "only the I-th of N disjoint shards (0-based) balanced by bytes, for array jobs: "
            '--shard "$AWS_BATCH_JOB_ARRAY_INDEX/N" (AWS Batch), --shard "$SLURM_ARRAY_TASK_ID/N" '
            "(Slurm, with --array=0-(N-1)); the N shards together are the whole list"
        ),
    )
    add_storage_flags(p)
    p.set_defaults(handler=_chunks)

    p = intermixed(sub.add_parser("cat", add_help=False, help="decode chunk objects to SAM"))
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument(
        "chunks",
        nargs="+",
        metavar="CHUNK_URL",
        help="chunk object URLs (from 'bams3 chunks'); '-' reads one chunk object from stdin",
    )
    p.add_argument("-h", "--header", action="store_true", help="print the dataset's SAM header first")
    p.add_argument("--filter", metavar="EXPR", help="keep records matching EXPR (see 'bams3 query --help')")
    add_storage_flags(p)
    p.set_defaults(handler=_cat)


def _add_parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--parallel",
        type=workers_value,
        default=DEFAULT_PARALLEL,
        metavar="N|auto",
        help=(
            f"concurrent chunk reads (default {DEFAULT_PARALLEL}). 'auto': one per usable core for "
            "local data (reading is then mostly decoding, which needs a core), and 4 per core, "
            "16 to 32, on S3 and other object stores (each request mostly waits on the network, "
            "so more requests in flight hide the latency; more than 32 only hold more chunks in "
            "memory)"
        ),
    )


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet", action="store_true", help="no progress display (shown on stderr when it is a terminal)"
    )


def shard_value(text: str) -> tuple[int, int]:
    """An argparse type: ``I/N``, the I-th (0-based) of N shards."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1:
        raise argparse.ArgumentTypeError(f"expected I/N with N >= 1 (e.g. 0/4), got {text!r}")
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard index must be from 0 to N-1 (0-based), got {text!r}")
    return i, n


def _query(args: argparse.Namespace) -> int:
    from bams3_spark.bam.writer import write_bam
    from bams3_spark.io.storage import CountingStorage
    from bams3_spark.query import Query, compile_filter, output_format, plan_query, write_sam

    flt = compile_filter(args.filter) if args.filter is not None else None
    fmt = output_format(args.output) if args.output and not args.count else "sam"
    opts = storage_options(args)
    ds = open_dataset_arg(args.dataset, opts)
    workers = resolve_parallel(args.parallel, ds.url)
    counting = None
    if args.stats:
        counting = CountingStorage(ds.storage)
        ds.storage = counting
    remote_bed = args.regions_file is not None and "://" in args.regions_file
    plan = plan_query(ds, args.regions, args.regions_file, workers, **(opts if remote_bed else {}))
    for warning in plan.warnings:
        print(f"bams3 query: warning: {warning}", file=sys.stderr)
    query = Query(plan, None, flt)
    if args.explain:
        sys.stdout.write(plan.explain(query.read_columns(count=args.count), count=args.count))
        return 0
    to_stdout = not args.count and args.output in (None, "-")
    with ExitStack() as stack:
        progress = stack.enter_context(progress_for(args, "query", data_on_stdout=to_stdout))
        if args.count:
            n = query.count(workers, progress)
            progress.close()
            out = open_output(stack, args.output)
            out.write(f"{n}\n".encode())
            out.flush()
        elif fmt == "bam":
            write_bam(args.output, ds.header, query.tables(workers, progress))
        else:
            header = ds.header if args.header else None
            write_sam(open_output(stack, args.output), query.tables(workers, progress), header)
    if counting is not None:
        _print_stats(plan, counting)
    return 0


def _print_stats(plan: Any, counting: Any) -> None:
    objects = {t.chunk.info.path: t.chunk.info.bytes for t in plan.tasks}
    total = sum(objects.values())
    share = f" = {100 * counting.data_bytes / total:.2f}%" if total else ""
    print(
        f"bams3 query: {counting.requests} read request(s), {counting.bytes_read:,} bytes; chunk data: "
        f"{counting.data_requests} request(s), {counting.data_bytes:,} bytes of {total:,} bytes in the "
        f"{len(objects)} chunk object(s) selected{share}",
        file=sys.stderr,
    )


def _export(args: argparse.Namespace) -> int:
    from bams3_spark.bam.writer import write_bam
    from bams3_spark.query import Query, output_format, plan_query, write_sam

    fmt = output_format(args.output)
    ds = open_dataset_arg(args.dataset, storage_options(args))
    workers = resolve_parallel(args.parallel, ds.url)
    query = Query(plan_query(ds, None, None, workers))
    with ExitStack() as stack:
        progress = stack.enter_context(progress_for(args, "export", data_on_stdout=args.output == "-"))
        if fmt == "bam":
            write_bam(args.output, ds.header, query.tables(workers, progress))
        else:
            write_sam(open_output(stack, args.output), query.tables(workers, progress), ds.header)
    return 0


def _chunks(args: argparse.Namespace) -> int:
    from bams3_spark.query import plan_query, shard_indices

    ds = open_dataset_arg(args.dataset, storage_options(args))
    plan = plan_query(ds, args.regions or None, None)
    seen: set[str] = set()
    chunks = []
    for task in plan.tasks:
        if task.chunk.info.path not in seen:
            seen.add(task.chunk.info.path)
            chunks.append(task.chunk)
    if args.shard is not None:
        keep = shard_indices([c.info.bytes for c in chunks], *args.shard)
        chunks = [chunks[i] for i in keep]
    lines = []
    for chunk in chunks:
        info = chunk.info
        if args.long:
            lines.append(
                f"{chunk.url}\t{chunk.rname}\t{info.window_start}\t{info.window_end}\t"
                f"{info.part}\t{info.records}\t{info.bytes}\n"
            )
        else:
            lines.append(chunk.url + "\n")
    sys.stdout.write("".join(lines))
    return 0


def _locate_chunk(url: str, opts: dict[str, Any], opened: dict[str, Any]) -> tuple[Any, Any]:
    """Return (dataset or None, ChunkRef or None) for a chunk URL.

    A chunk inside a dataset is looked up in its reference's index, so that
    its size and SHA-256 are verified; a chunk outside any dataset (a copy)
    is decoded on its own, protected by its Parquet page CRCs. ``opened``
    caches datasets by prefix, so listing many chunks of one dataset reads
    its manifest and indexes once.
    """
    from bams3_spark.dataset.chunks import ChunkRef
    from bams3_spark.dataset.reader import DatasetReader
    from bams3_spark.exceptions import CorruptDatasetError, NotADatasetError
    from bams3_spark.format.layout import parse_chunk_path, split_chunk_url

    parts = split_chunk_url(url)
    if parts is None:
        return None, None
    root, rel = parts
    if root not in opened:
        try:
            opened[root] = DatasetReader.open(root, **opts)
        except (NotADatasetError, FileNotFoundError):
            opened[root] = None
    ds = opened[root]
    if ds is None:
        return None, None
    parsed = parse_chunk_path(rel)
    for entry in ds.manifest.references:
        if parsed is not None and entry.key == parsed[0]:
            for info in ds.index(entry.name).chunks:
                if info.path == rel:
                    return ds, ChunkRef(ds.storage, entry.name, info)
    raise CorruptDatasetError(f"{url}: not a chunk of the dataset {ds.url} (not in its index)")


def _read_stdin_chunk() -> Any:
    """Decode the one chunk object on stdin (checked by its Parquet page CRCs; no index to check it against).

    Raises:
        InputFormatError: For empty stdin.
        CorruptDatasetError: For bytes that are not a chunk object.
    """
    from bams3_spark.exceptions import InputFormatError
    from bams3_spark.format.chunk import decode_chunk

    data = sys.stdin.buffer.read()
    if not data:
        raise InputFormatError("stdin: empty; expected one chunk object (e.g. aws s3 cp s3://.../x.chunk -)")
    return decode_chunk(data, "stdin")


def _cat(args: argparse.Namespace) -> int:
    from bams3_spark.exceptions import InvalidArgumentError
    from bams3_spark.format.chunk import decode_chunk
    from bams3_spark.io.storage import storage_for_file
    from bams3_spark.query import compile_filter, write_sam

    opts = storage_options(args)
    flt = compile_filter(args.filter) if args.filter is not None else None
    if args.chunks.count(STDIN) > 1:
        raise InvalidArgumentError("'-' (stdin) can be given once: it holds one chunk object")
    out = sys.stdout.buffer
    opened: dict[str, Any] = {}
    for i, url in enumerate(args.chunks):
        if url == STDIN:
            ds, table = None, _read_stdin_chunk()
        else:
            ds, chunk = _locate_chunk(url, opts, opened)
            if chunk is not None:
                table = chunk.read()
            else:
                storage, name = storage_for_file(url, **opts)
                table = decode_chunk(storage.read_bytes(name), storage.url_of(name))
        header = None
        if i == 0 and args.header:
            if ds is None:
                where = "stdin" if url == STDIN else url
                raise FileNotFoundError(f"{where}: not inside a dataset, so no SAM header to print")
            header = ds.header
        if flt is not None:
            table = table.filter(flt.mask(table))
        write_sam(out, [table], header)
    return 0
