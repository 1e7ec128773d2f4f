"""Files written by executors into a job's output directory (local or object store), atomically.

A cohort job writes one file (or one set of files) per sample from the task
that computed it. Each file is written to a local staging path first and
then moved into ``OUT`` in one step (a rename on local disk, one upload on
S3), so a file in ``OUT`` is always complete. The driver refuses an existing
``OUT`` (unless overwriting), deletes it if the job fails, and writes
``OUT/_SUCCESS`` last, as Spark's own writers do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from bams3_spark.io.storage import Storage, shared_storage

#: Written last into a complete output directory.
SUCCESS = "_SUCCESS"


def prepare_output(out: str, overwrite: bool, storage_options: Mapping[str, Any]) -> Storage:
    """Check (or clear, with ``overwrite``) the output directory on the driver.

    Raises:
        FileExistsError: If ``out`` exists and ``overwrite`` is False.
        OSError: For storage failures.
    """
    storage = Storage(out, **dict(storage_options))
    if storage.exists():
        if not overwrite:
            raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
        storage.delete_tree()
    if storage.is_local:
        os.makedirs(storage.root, exist_ok=True)
    return storage


def finish_output(storage: Storage) -> None:
    """Mark a complete output (``_SUCCESS``)."""
    storage.write_bytes(SUCCESS, b"")


def abort_output(storage: Storage) -> None:
    """Delete a failed job's output, so nothing looks complete (best effort)."""
    with suppress(OSError):
        storage.delete_tree()


@contextmanager
def staging(out: str, storage_options: Mapping[str, Any]) -> Iterator[str]:
    """A local directory to write files in before :func:`publish` moves them to ``out`` (executors).

    For a local ``out`` it lies inside ``out`` (hidden), so the move is a rename.
    """
    storage = shared_storage(out, **dict(storage_options))
    if storage.is_local:
        os.makedirs(storage.root, exist_ok=True)
        folder = os.path.join(storage.root, f".staging-{uuid.uuid4().hex[:12]}")
        os.makedirs(folder)
    else:
        folder = tempfile.mkdtemp(prefix="bams3-staging-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(path: str, out: str, name: str, storage_options: Mapping[str, Any]) -> None:
    """Move the finished local file ``path`` to ``out/name`` in one step (executors)."""
    storage = shared_storage(out, **dict(storage_options))
    if storage.is_local:
        target = storage.full_path(name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(path, target)
        return
    try:
        storage.fs.put_file(path, storage.full_path(name))
    except Exception as exc:  # noqa: BLE001 - storage clients raise anything
        raise OSError(f"{storage.url_of(name)}: cannot write ({exc})") from exc


__all__ = ["SUCCESS", "abort_output", "finish_output", "prepare_output", "publish", "staging"]
