"""Storage: one interface over fsspec for local paths, ``file://``, ``s3://`` and more.

A :class:`Storage` is rooted at a dataset prefix and addresses objects by
relative path. It holds only configuration (URL and storage options), so it
pickles to Spark executors and worker processes; the fsspec filesystem is
created lazily in each process and dropped when pickling.

S3 uses s3fs with the standard AWS credential chain. An S3-compatible endpoint
(MinIO, moto, Ceph) comes from the ``endpoint_url`` option or, failing that,
the ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` environment variables.

Errors stay :class:`OSError` subclasses (``FileNotFoundError``,
``PermissionError``...) with the object URL in the message.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec

from bams3_spark.exceptions import one_line
from bams3_spark.format.layout import is_chunk_path

#: Option names accepted in ``storage_options`` besides fsspec's own keys.
S3_OPTION_ALIASES = {
    "s3_endpoint": "endpoint_url",
    "endpoint": "endpoint_url",
    "s3-endpoint": "endpoint_url",
}
_SECRET_KEYS = ("secret", "key", "token", "password")


def split_url(url: str) -> tuple[str, str]:
    """Return (protocol, path) for a URL or local path; local paths become absolute."""
    if "://" in url:
        protocol, rest = url.split("://", 1)
        protocol = protocol.lower()
        if protocol in ("file", "local"):
            return "file", os.path.abspath(rest)
        if protocol == "s3a":
            protocol = "s3"
        return protocol, rest.rstrip("/")
    return "file", os.path.abspath(url)


def normalize_options(protocol: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Return fsspec options for ``protocol``, resolving aliases and the endpoint.

    Accepts ``endpoint_url`` (or ``s3_endpoint``), ``anon`` and ``profile`` for S3,
    and passes every other key to the fsspec filesystem unchanged.
    """
    opts = {S3_OPTION_ALIASES.get(k, k): v for k, v in (options or {}).items() if v is not None}
    if protocol == "s3":
        endpoint = (
            opts.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or (os.environ.get("AWS_ENDPOINT_URL"))
        )
        if endpoint:
            opts["endpoint_url"] = endpoint
        if isinstance(opts.get("anon"), str):
            opts["anon"] = opts["anon"].lower() in ("1", "true", "yes")
        # Ranged reads: never read ahead more than asked for.
        opts.setdefault("default_block_size", 1 << 20)
        opts.setdefault("default_fill_cache", False)
        opts.setdefault("skip_instance_cache", True)
        # botocore keeps at most 10 connections per client: parallel readers
        # (`bams3 query --parallel 16`) would wait for one. Measured with a
        # latency proxy: 10 requests in flight by default, 32 with this.
        opts.setdefault("config_kwargs", {"max_pool_connections": 64})
    return opts


def redact(options: dict[str, Any]) -> dict[str, Any]:
    """Return options with secret-looking values replaced, for logs and errors."""
    return {
        k: ("***" if any(s in k.lower() for s in _SECRET_KEYS) and k != "endpoint_url" else v)
        for k, v in options.items()
    }


#: Per-process Storage objects, see :func:`shared_storage`.
_SHARED: dict[tuple[int, str, str], Storage] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 256


class Storage:
    """Objects under one prefix (a local directory or an S3/fsspec prefix).

    Args:
        url: Prefix URL or local path (``/data/x.bams3``, ``s3://bucket/x.bams3``).
        **storage_options: fsspec options (``endpoint_url``, ``anon``,
            ``profile``, ``key``, ``secret``...).
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url.rstrip("/") if url not in ("/",) else url
        self.protocol, self.root = split_url(url)
        self.options = normalize_options(self.protocol, storage_options)
        self._fs: fsspec.AbstractFileSystem | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None  # clients hold sockets and threads: rebuild per process
        return state

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem, created on first use in each process."""
        if self._fs is None:
            self._fs = fsspec.filesystem(self.protocol, **self.options)
        return self._fs

    @property
    def is_local(self) -> bool:
        """True for local files."""
        return self.protocol == "file"

    def child(self, rel: str) -> Storage:
        """Return a Storage rooted at ``rel`` below this one (same options)."""
        sub = Storage.__new__(Storage)
        sub.__dict__.update(self.__getstate__())
        sub.root = self.full_path(rel)
        sub.url = self.url_of(rel)
        return sub

    def full_path(self, rel: str = "") -> str:
        """Return the filesystem path of ``rel`` (no protocol)."""
        if not rel:
            return self.root
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"unsafe object path {rel!r}")
        return posixpath.join(self.root, rel)

    def url_of(self, rel: str = "") -> str:
        """Return the URL of ``rel``, for messages (no credentials in it)."""
        path = self.full_path(rel)
        return path if self.protocol == "file" else f"{self.protocol}://{path}"

    def _wrap(self, exc: Exception, rel: str, action: str) -> OSError:
        where = self.url_of(rel)
        if isinstance(exc, FileNotFoundError):
            return FileNotFoundError(f"{where}: not found")
        if isinstance(exc, PermissionError):
            return PermissionError(f"{where}: permission denied ({action})")
        if isinstance(exc, IsADirectoryError | NotADirectoryError):
            return type(exc)(f"{where}: {exc.strerror or exc}")
        return OSError(f"{where}: cannot {action} ({one_line(exc)})")

    def exists(self, rel: str = "") -> bool:
        """Return whether an object (or directory) exists at ``rel``."""
        try:
            return bool(self.fs.exists(self.full_path(rel)))
        except Exception as exc:  # noqa: BLE001 - storage clients raise anything
            raise self._wrap(exc, rel, "check") from exc

    def size(self, rel: str) -> int:
        """Return the size in bytes of the object at ``rel``."""
        try:
            return int(self.fs.size(self.full_path(rel)))
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, rel, "stat") from exc

    def read_bytes(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        """Read an object, or the byte range [start, end) of it."""
        try:
            if start is None and end is None:
                return bytes(self.fs.cat_file(self.full_path(rel)))
            return bytes(self.fs.cat_file(self.full_path(rel), start=start, end=end))
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, rel, "read") from exc

    def open(self, rel: str, size: int | None = None) -> IO[bytes]:
        """Open an object for random-access reads (ranged GETs on S3)."""
        try:
            if self.is_local:
                return open(self.full_path(rel), "rb")  # noqa: SIM115
            kwargs: dict[str, Any] = {"cache_type": "none"}
            if size is not None:
                kwargs["size"] = size
            return self.fs.open(self.full_path(rel), "rb", **kwargs)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, rel, "open") from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write an object in one step: readers see the old object or the new one.

        Local files are written to a temporary name and renamed; an S3 PUT is
        atomic by itself.
        """
        path = self.full_path(rel)
        try:
            if self.is_local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with replacing(path) as tmp, open(tmp, "wb") as fh:
                    fh.write(data)
            else:
                self.fs.pipe_file(path, data)
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, rel, "write") from exc

    def delete(self, rel: str) -> None:
        """Delete one object if it exists."""
        try:
            if self.fs.exists(self.full_path(rel)):
                self.fs.rm_file(self.full_path(rel))
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, rel, "delete") from exc

    def delete_tree(self, rel: str = "") -> None:
        """Delete every object under ``rel`` (the prefix itself for '')."""
        try:
            if self.fs.exists(self.full_path(rel)):
                self.fs.rm(self.full_path(rel), recursive=True)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, rel, "delete") from exc

    def listdir(self, rel: str = "") -> list[str]:
        """Return the names directly under ``rel`` (empty if nothing is there)."""
        try:
            entries = self.fs.ls(self.full_path(rel), detail=False)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, rel, "list") from exc
        return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)

    def check_writable(self) -> None:
        """Fail early if the prefix cannot be written (missing bucket, no permission)."""
        probe = f".bams3-write-probe-{uuid.uuid4().hex}"
        try:
            self.write_bytes(probe, b"")
        except FileNotFoundError:
            what = "bucket" if self.protocol == "s3" else "location"
            raise FileNotFoundError(f"{self.url}: {what} does not exist") from None
        except PermissionError:
            raise PermissionError(f"{self.url}: permission denied (cannot write)") from None
        self.delete(probe)


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path to write instead of ``path``; it becomes ``path`` if the block succeeds.

    A write that fails or is interrupted leaves ``path`` as it was (absent, or
    the old file) and removes the temporary: never a half-written output that
    looks finished. Outputs that are not regular files (``/dev/stdout``, a
    FIFO) cannot be renamed over and are written in place.

    Args:
        path: The local file to (re)place.
    """
    path = os.fspath(path)
    try:
        special = not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        special = False
    if special:
        yield path
        return
    folder, name = os.path.split(os.path.abspath(path))
    # Hidden, next to the output: the same file system, so the rename is atomic.
    tmp = os.path.join(folder, f".{name}{_TMP_MARK}{uuid.uuid4().hex[:12]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


_TMP_MARK = ".tmp-"


def is_temporary_name(name: str) -> bool:
    """Whether a file name is one of :func:`replacing`'s temporaries (left by a killed writer)."""
    stem, mark, tail = name.rpartition(_TMP_MARK)
    hex_tail = len(tail) == 12 and all(c in "0123456789abcdef" for c in tail)
    return bool(mark) and stem.startswith(".") and hex_tail


def shared_storage(url: str, **storage_options: Any) -> Storage:
    """Return this process's Storage for ``url`` and options, creating it once.

    Work that arrives pickled (process-pool tasks, Spark tasks) would otherwise
    build a new client per unit of work: about 0.1 s of CPU for S3 (botocore
    loads its service model), more than writing a small chunk costs. One
    client per process and prefix is shared by threads, as fsspec allows.
    """
    options = normalize_options(split_url(url)[0], storage_options)
    key = (os.getpid(), url, json.dumps(options, sort_keys=True, default=repr))
    with _SHARED_LOCK:
        found = _SHARED.get(key)
        if found is None:
            if len(_SHARED) >= _SHARED_MAX:
                _SHARED.clear()
            found = _SHARED[key] = Storage(url, **storage_options)
        return found


def storage_for_file(url: str, **storage_options: Any) -> tuple[Storage, str]:
    """Split a file URL into (Storage of its directory, file name)."""
    protocol, path = split_url(url)
    parent, name = posixpath.split(path)
    base = parent if protocol == "file" else f"{protocol}://{parent}"
    return Storage(base, **storage_options), name


class CountingStorage(Storage):
    """A :class:`Storage` that counts read requests and bytes (for ``--stats`` and job summaries).

    Args:
        inner: The storage to read through (its configuration and client are shared).
    """

    def __init__(self, inner: Storage) -> None:
        self.__dict__.update(inner.__dict__)  # same URL, options and client
        self.requests = 0
        self.bytes_read = 0
        self.data_requests = 0
        self.data_bytes = 0
        self._count_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_count_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._count_lock = threading.Lock()

    def read_bytes(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        """Read like :meth:`Storage.read_bytes`, counting the request and bytes."""
        data = super().read_bytes(rel, start, end)
        with self._count_lock:
            self.requests += 1
            self.bytes_read += len(data)
            if is_chunk_path(rel):
                self.data_requests += 1
                self.data_bytes += len(data)
        return data
