"""FORMAT 1.0 test data: a dataset rewritten with the chunk encodings and versions of FORMAT 1.0.

The package writes FORMAT 1.1; datasets written as 1.0 must stay readable by
every reader (FORMAT.md §1), so tests make some from fresh 1.1 datasets.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bams3_spark.format.chunk import chunk_metadata, decode_chunk, encode_chunk


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rewrite_as_format_1_0(dataset: Path) -> None:
    """Rewrite a local dataset in place as FORMAT 1.0: chunk encodings, indexes, manifest."""
    manifest_path = dataset / "bams3.json"
    manifest = json.loads(manifest_path.read_text())
    for ref in manifest["references"]:
        if ref["index"] is None:
            continue
        index_path = dataset / ref["index"]["path"]
        index = json.loads(index_path.read_text())
        total = 0
        for chunk in index["chunks"]:
            path = dataset / chunk["path"]
            raw = path.read_bytes()
            meta = chunk_metadata(raw, str(path))
            start, end = (int(x) for x in meta["window"].split("-"))
            table = decode_chunk(raw, str(path))
            new = encode_chunk(
                table, meta["reference"], (start, end), int(meta["part"]), format_version="1.0"
            )
            path.write_bytes(new)
            chunk["bytes"], chunk["sha256"] = len(new), _sha(new)
            total += len(new)
        index["format_version"] = "1.0"
        raw_index = json.dumps(index, separators=(",", ":")).encode()
        index_path.write_bytes(raw_index)
        ref["bytes"] = total
        ref["index"]["bytes"], ref["index"]["sha256"] = len(raw_index), _sha(raw_index)
    manifest["format_version"] = "1.0"
    manifest["totals"]["bytes"] = sum(r["bytes"] for r in manifest["references"])
    manifest_path.write_text(json.dumps(manifest, indent=1))
