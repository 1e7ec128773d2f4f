"""Print the runtime requirements of a wheel, minus pyspark: ``python tools/runtime_requirements.py WHEEL``.

``make dist`` installs these into the environment it packs for ``spark-submit
--archives``. pyspark is left out on purpose: on a cluster the Spark
installation provides it (spark-submit puts its own ``pyspark.zip`` first on
every Python worker's path), so shipping another 400 MB copy would only be
shadowed. Optional extras (``test``) are left out too.
"""

from __future__ import annotations

import sys
import zipfile
from email.parser import BytesParser

from packaging.requirements import Requirement

#: Provided by the cluster's Spark, never shipped in the packed environment.
PROVIDED_BY_SPARK = frozenset({"pyspark", "py4j"})


def runtime_requirements(wheel: str) -> list[str]:
    """Return the wheel's unconditional ``Requires-Dist`` entries, except Spark's own packages."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = BytesParser().parsebytes(zf.read(name))
    out = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        if req.name.lower() in PROVIDED_BY_SPARK:
            continue
        out.append(str(req))
    return out


def main(argv: list[str]) -> int:
    """Print one requirement per line; exit 2 on usage errors."""
    if len(argv) != 1:
        print("usage: runtime_requirements.py WHEEL", file=sys.stderr)
        return 2
    try:
        reqs = runtime_requirements(argv[0])
    except (OSError, zipfile.BadZipFile, StopIteration) as exc:
        print(f"runtime_requirements.py: error: {argv[0]}: not a readable wheel ({exc})", file=sys.stderr)
        return 1
    print("\n".join(reqs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
