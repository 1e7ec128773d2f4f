"""One storage test suite, run on local disk and on the moto S3 server."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bams3_spark.io.storage import Storage, redact, split_url, storage_for_file


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield Storage(str(tmp_path / "prefix"))
    else:
        bucket = request.getfixturevalue("s3_bucket")
        opts = request.getfixturevalue("s3_opts")
        yield Storage(f"s3://{bucket}/prefix-{uuid.uuid4().hex[:6]}", **opts)


def test_write_read_and_ranges(storage: Storage) -> None:
    data = bytes(range(256)) * 10
    storage.write_bytes("a/b/obj.bin", data)
    assert storage.exists("a/b/obj.bin")
    assert storage.size("a/b/obj.bin") == len(data)
    assert storage.read_bytes("a/b/obj.bin") == data
    assert storage.read_bytes("a/b/obj.bin", 10, 20) == data[10:20]
    with storage.open("a/b/obj.bin", size=len(data)) as fh:
        fh.seek(100)
        assert fh.read(5) == data[100:105]


def test_overwrite_replaces_whole_object(storage: Storage) -> None:
    storage.write_bytes("x.json", b"old contents that are longer")
    storage.write_bytes("x.json", b"new")
    assert storage.read_bytes("x.json") == b"new"


def test_listdir_delete_and_tree(storage: Storage) -> None:
    for name in ("data/k/1.chunk", "data/k/2.chunk", "index/k.json", "bams3.json"):
        storage.write_bytes(name, b"x")
    assert storage.listdir("") == ["bams3.json", "data", "index"]
    assert storage.listdir("data/k") == ["1.chunk", "2.chunk"]
    storage.delete("bams3.json")
    assert not storage.exists("bams3.json")
    storage.delete("bams3.json")  # deleting twice is fine
    storage.delete_tree("")
    assert storage.listdir("") == []


def test_missing_objects_are_file_not_found_naming_the_url(storage: Storage) -> None:
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        storage.read_bytes("nothing-here.json")
    assert storage.listdir("no-dir") == []


def test_pickles_without_clients(storage: Storage) -> None:
    storage.write_bytes("p.bin", b"payload")
    _ = storage.fs  # a live client must not travel with the pickle
    clone = pickle.loads(pickle.dumps(storage))
    assert clone._fs is None
    assert clone.read_bytes("p.bin") == b"payload"
    assert clone.url == storage.url


def test_child_storage_and_unsafe_paths(storage: Storage) -> None:
    child = storage.child("sub")
    child.write_bytes("o", b"1")
    assert storage.read_bytes("sub/o") == b"1"
    for bad in ("../escape", "/abs", "a/../../b"):
        with pytest.raises(ValueError, match="unsafe"):
            storage.read_bytes(bad)


def test_check_writable(storage: Storage) -> None:
    storage.check_writable()
    assert storage.listdir("") == []


def test_url_helpers(tmp_path: Path) -> None:
    assert split_url("s3a://b/k/") == ("s3", "b/k")
    assert split_url("file:///x/y") == ("file", "/x/y")
    assert split_url("rel/path")[1] == str(tmp_path.cwd() / "rel/path")
    st, name = storage_for_file("s3://bucket/dir/in.bam", endpoint_url="http://127.0.0.1:1")
    assert (st.url, name, st.options["endpoint_url"]) == ("s3://bucket/dir", "in.bam", "http://127.0.0.1:1")
    assert redact({"secret": "s", "key": "k", "endpoint_url": "e"}) == {
        "secret": "***",
        "key": "***",
        "endpoint_url": "e",
    }
