"""The package's exceptions: one root, a few precise subclasses, and the one-line rendering.

Every user-facing failure raised by bams3-spark is a :class:`Bams3Error`
(format, input and integrity problems) or an :class:`OSError` (storage: missing
objects, permissions, network), so the CLI can print one clear line for both.
"""

from __future__ import annotations


class Bams3Error(Exception):
    """Root of every error bams3-spark raises on purpose."""


class InvalidArgumentError(Bams3Error, ValueError):
    """A user-supplied argument or option value is not acceptable."""


class RegionError(InvalidArgumentError):
    """A region string is malformed or names an unknown reference."""


class FilterError(InvalidArgumentError):
    """A ``--filter`` expression cannot be parsed or names an unknown column."""


class InputFormatError(Bams3Error):
    """An input file (BAM/SAM) is not what it claims to be, or is damaged."""


class UnsortedInputError(InputFormatError):
    """The input is not coordinate-sorted; conversion needs ``samtools sort``."""


class DatasetError(Bams3Error):
    """A dataset cannot be used as it is."""


class NotADatasetError(DatasetError):
    """The location holds no BAMS3 dataset at all."""


class IncompleteDatasetError(DatasetError):
    """Chunks exist but no manifest: a conversion failed or is still running."""


class DatasetExistsError(DatasetError):
    """The output already holds a dataset and ``overwrite`` was not requested."""


class UnsupportedVersionError(DatasetError):
    """The dataset was written by a newer, incompatible format version."""


class CorruptDatasetError(DatasetError):
    """A manifest, index or chunk object is malformed or fails verification."""


class ChecksumError(CorruptDatasetError):
    """A chunk object's bytes do not match the checksum recorded in the index."""


class UnsupportedSparkError(Bams3Error):
    """The installed pyspark is outside the supported range, or lacks an API a feature needs."""


def one_line(exc: BaseException) -> str:
    """Return the first line of an error's message, whitespace folded (its type name if empty).

    Every user-facing failure is reported as one line; messages of storage
    clients and htslib often carry more (tracebacks, XML bodies, hints).
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return " ".join(text.splitlines()[0].split())
