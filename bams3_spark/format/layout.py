"""Where objects live in a dataset (FORMAT.md §2): names, keys and paths, derived, never read.

Every other module asks this one for object names: a reader derives each path
from a reference key, a window and a part, so a manifest or index can never
point a reader elsewhere (FORMAT.md §2, last rule).
"""

from __future__ import annotations

import re

MANIFEST_NAME = "bams3.json"
HEADER_NAME = "header.sam"
INDEX_DIR = "index"
DATA_DIR = "data"
#: Unplaced unmapped reads: the region ``*``, stored under the key ``unplaced``
#: with the window [0, 1).
UNPLACED_NAME = "*"
UNPLACED_KEY = "unplaced"
UNPLACED_WINDOW = (0, 1)

DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 256 << 10
MAX_CHUNK_SIZE = 4 << 20
DEFAULT_MAX_CHUNK_RECORDS = 250_000

#: Everything a writer puts at the top of a prefix besides the manifest: a
#: prefix holding only these (and no manifest) is the remains of a failed writer.
WRITER_ENTRIES = frozenset({DATA_DIR, INDEX_DIR, HEADER_NAME})

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_CHUNK_PATH_RE = re.compile(
    rf"^{DATA_DIR}/(?P<key>[A-Za-z0-9_][A-Za-z0-9._-]{{0,99}})/"
    r"(?P<start>\d{10})-(?P<end>\d{10})(?:\.(?P<part>\d{4}))?\.chunk$"
)
_CHUNK_URL_RE = re.compile(rf"^(?P<root>.+)/(?P<rel>{DATA_DIR}/[^/]+/[^/]+\.chunk)$")


def reference_key(tid: int, name: str) -> str:
    """Return the storage key of reference number ``tid`` named ``name``.

    Keys are unique (they start with the reference's index in the header),
    deterministic, and contain only ``[A-Za-z0-9._-]`` so they are safe as S3
    keys and file names on every filesystem, whatever the reference name
    (``HLA-DRB1*15:01:01:01`` becomes ``r000012-HLA-DRB1_15_01_01_01``).
    """
    safe = _UNSAFE_KEY_CHARS.sub("_", name)[:80]
    return f"r{tid:06d}-{safe}"


def chunk_path(key: str, window_start: int, window_end: int, part: int = 0) -> str:
    """Return the dataset-relative path of a chunk object.

    Part 0 of a window is ``data/<key>/<start>-<end>.chunk``; a window split
    because it holds too many records continues with ``<start>-<end>.0001.chunk``.
    """
    suffix = "" if part == 0 else f".{part:04d}"
    return f"{DATA_DIR}/{key}/{window_start:010d}-{window_end:010d}{suffix}.chunk"


def index_path(key: str) -> str:
    """Return the dataset-relative path of a reference's index."""
    return f"{INDEX_DIR}/{key}.json"


def is_chunk_path(rel: str) -> bool:
    """Whether a dataset-relative path names a chunk object (``data/...``)."""
    return rel.startswith(DATA_DIR + "/")


def parse_chunk_path(rel: str) -> tuple[str, int, int, int] | None:
    """Return (reference key, window start, window end, part) of a chunk path, or None.

    The inverse of :func:`chunk_path`.
    """
    m = _CHUNK_PATH_RE.match(rel)
    if m is None:
        return None
    return m["key"], int(m["start"]), int(m["end"]), int(m["part"] or 0)


def split_chunk_url(url: str) -> tuple[str, str] | None:
    """Split the URL of a chunk object inside a dataset into (dataset URL, relative path), or None."""
    m = _CHUNK_URL_RE.match(url.rstrip("/"))
    return None if m is None else (m["root"], m["rel"])
