"""What every command line shares: storage flags, argument types, and running a command.

Every failure is one line on stderr naming the input and the problem, with a
non-zero exit status (1 for errors, 2 for usage, 130 when interrupted); a
traceback is printed only with ``--debug`` (or ``BAMS3_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from typing import IO, Any, NoReturn

from bams3_spark.exceptions import Bams3Error, one_line


def storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the fsspec options implied by the common storage flags."""
    opts: dict[str, Any] = {}
    if getattr(args, "s3_endpoint", None):
        opts["endpoint_url"] = args.s3_endpoint
    if getattr(args, "anon", False):
        opts["anon"] = True
    if getattr(args, "profile", None):
        opts["profile"] = args.profile
    return opts


def _int_at_least(text: str, low: int, expected: str) -> int:
    """``text`` as a whole number of at least ``low``, else argparse's usage error."""
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return _int_at_least(text, 0, "a whole number >= 0")


def flag_value(text: str) -> int:
    """An argparse type: a SAM FLAG mask in decimal or hexadecimal (``0x904``), as samtools accepts."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a FLAG value (decimal or 0x hex), got {text!r}") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"FLAG value {text!r} is out of range 0..65535")
    return value


def workers_value(text: str) -> int | str:
    """An argparse type: a positive whole number, or ``auto`` (resolved by :func:`resolve_parallel`)."""
    return "auto" if text == "auto" else positive_int(text)


def resolve_parallel(value: int | str, url: str) -> int:
    """The number of concurrent reads for ``--parallel N|auto`` on the data at ``url``.

    ``auto`` is one per usable core for local files (reads are mostly
    decoding) and the I/O-bound default for object stores (requests mostly
    wait on the network): :func:`bams3_spark.parallel.resolve_workers`.
    """
    from bams3_spark.parallel import resolve_workers

    remote = "://" in url and not url.startswith("file://")
    return resolve_workers(value, io_bound=remote)


def open_dataset_arg(url: str, opts: dict[str, Any]) -> Any:
    """Open the DATASET argument of a command (a :class:`DatasetReader`).

    A chunk object given instead of a dataset gets a hint to decode it with
    ``bams3 cat`` rather than "not a dataset".

    Raises:
        NotADatasetError: For a chunk object, with the hint.
        Bams3Error, OSError: As :meth:`DatasetReader.open`.
    """
    from bams3_spark.dataset.reader import DatasetReader
    from bams3_spark.exceptions import NotADatasetError
    from bams3_spark.format.layout import split_chunk_url

    try:
        return DatasetReader.open(url, **opts)
    except (NotADatasetError, NotADirectoryError):
        named_like_one = url.rstrip("/").endswith(".chunk") or split_chunk_url(url) is not None
        local = url.removeprefix("file://") if "://" not in url or url.startswith("file://") else None
        if named_like_one and (local is None or os.path.isfile(local)):
            raise NotADatasetError(
                f"{url}: a chunk object, not a dataset; decode it with 'bams3 cat {url}'"
            ) from None
        raise


def add_storage_flags(p: argparse.ArgumentParser) -> None:
    """Add the common S3 flags (``--s3-endpoint``, ``--anon``, ``--profile``) to a parser."""
    g = p.add_argument_group("storage")
    g.add_argument(
        "--s3-endpoint", metavar="URL", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)"
    )
    g.add_argument("--anon", action="store_true", help="anonymous S3 access (public buckets)")
    g.add_argument("--profile", help="AWS profile name from ~/.aws/config")


def add_job_flags(p: argparse.ArgumentParser) -> None:
    """Add what every ``spark-submit`` job takes: ``--master``, ``--debug`` and the storage flags."""
    p.add_argument(
        "--master", help="Spark master (default: spark-submit's, else SPARK_MASTER, else local[*])"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    add_storage_flags(p)


def add_cohort_inputs(p: argparse.ArgumentParser) -> None:
    """Add a cohort job's inputs: datasets (paths, URLs, quoted globs) and ``--manifest TSV``."""
    p.add_argument("datasets", nargs="*", metavar="DATASET",
                   help="dataset paths, URLs or quoted globs (one sample each)")
    p.add_argument("--manifest", metavar="TSV",
                   help="sample sheet: DATASET or SAMPLE<TAB>DATASET per line (or a header naming columns)")


def require_cohort_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A usage error (exit 2) when :func:`add_cohort_inputs` got neither datasets nor a sheet."""
    if not args.datasets and not args.manifest:
        parser.error("give datasets (paths, URLs, quoted globs) or --manifest TSV")


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (and a pointer to
    ``--help``), exit status 2, like every other failure of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class IntermixedParser(CommandParser):
    """A sub-command parser that accepts options between positionals.

    ``bams3 query DS chr1 -c chr2`` then means what ``samtools view`` users
    expect: argparse's default stops filling ``REGION...`` at the first option.
    """

    _intermixing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def intermixed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.__class__ = IntermixedParser
    return parser


def open_output(stack: ExitStack, path: str | None) -> IO[bytes]:
    """Standard output, or ``path`` written under a temporary name until the command succeeds."""
    from bams3_spark.io.storage import replacing

    if path is None or path == "-":
        return sys.stdout.buffer
    try:
        return stack.enter_context(open(stack.enter_context(replacing(path)), "wb"))
    except OSError as exc:
        raise OSError(f"{path}: cannot write ({exc.strerror or exc})") from None


def debug_wanted(args: argparse.Namespace) -> bool:
    """Whether tracebacks were asked for (``--debug`` or ``BAMS3_DEBUG=1``)."""
    return bool(getattr(args, "debug", False)) or os.environ.get("BAMS3_DEBUG") == "1"


def run_command(prog: str, action: Callable[[], int], debug: bool) -> int:
    """Run a command's action; turn failures into one line on stderr and an exit status.

    Args:
        prog: The name to prefix error lines with (``bams3 query``).
        action: The command; returns its exit status.
        debug: Print the traceback too.

    Returns:
        The action's status; 1 for an error, 130 when interrupted, 0 when
        stdout was closed by a downstream reader (``| head``).
    """
    try:
        return action()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Downstream closed the pipe (e.g. `| head`): not an error for us.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (Bams3Error, OSError, ValueError) as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 1
