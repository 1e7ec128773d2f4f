"""Object names of a dataset (FORMAT.md §2): derived one way, parsed back the same way."""

from __future__ import annotations

import pytest

from bams3_spark.format.layout import (
    UNPLACED_KEY,
    UNPLACED_WINDOW,
    chunk_path,
    is_chunk_path,
    parse_chunk_path,
    reference_key,
    split_chunk_url,
)


@pytest.mark.parametrize(
    ("window", "part"), [((0, 1 << 20), 0), ((1 << 20, 2 << 20), 3), (UNPLACED_WINDOW, 0)]
)
def test_chunk_paths_parse_back(window: tuple[int, int], part: int) -> None:
    for key in (reference_key(12, "HLA-DRB1*15:01:01:01"), UNPLACED_KEY):
        rel = chunk_path(key, window[0], window[1], part)
        assert is_chunk_path(rel)
        assert parse_chunk_path(rel) == (key, window[0], window[1], part)


@pytest.mark.parametrize(
    "rel",
    ["data/k/1-2.chunk", "data/k/0000000000-0000000001.1.chunk", "index/k.json", "data/../x.chunk",
     "data/k/0000000000-0000000001.chunk/extra"],
)
def test_other_paths_are_not_chunks(rel: str) -> None:
    assert parse_chunk_path(rel) is None


def test_split_chunk_url() -> None:
    rel = chunk_path("r000001-chr2", 0, 1 << 20)
    assert split_chunk_url(f"s3://bucket/cohort/a.bams3/{rel}") == ("s3://bucket/cohort/a.bams3", rel)
    assert split_chunk_url(f"/data/a.bams3/{rel}/") == ("/data/a.bams3", rel)
    assert split_chunk_url("/tmp/copy.chunk") is None
