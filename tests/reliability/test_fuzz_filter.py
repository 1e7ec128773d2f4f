"""Fuzzing ``--filter`` expressions with hypothesis.

Random text (including Python that must never run) only ever fails with
``FilterError``, at compile time or on evaluation. Random well-typed
expressions are compared, row by row, with Python evaluating the same
expression: the filter is a translation into pyarrow compute, so the two must
agree wherever neither overflows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bams3_spark import open_dataset
from bams3_spark.convert import convert
from bams3_spark.exceptions import FilterError
from bams3_spark.format.schema import COLUMNS
from bams3_spark.query import compile_filter

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
INT_COLUMNS = ["flag", "pos", "end", "mapq", "pnext", "tlen"]
STR_COLUMNS = ["qname", "rname", "cigar", "rnext", "seq"]
LOGIC = ["and", "or", "&", "|", "^"]


@pytest.fixture(scope="module")
def records(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """Real records of every kind: mapped, unmapped, both strands, paired (120 rows)."""
    out = tmp_path_factory.mktemp("filter") / "ds.bams3"
    convert(str(multi_bam), str(out), chunk_size="256K")
    ds = open_dataset(str(out))
    tables = [c.read() for c in ds.chunks()[:1] + ds.chunks()[-1:]]
    table = pa.concat_tables([t.slice(0, 60) for t in tables])
    for name in INT_COLUMNS + STR_COLUMNS:
        assert table.column(name).null_count == 0, name  # the oracle below has no nulls
    return table


# -- random text ------------------------------------------------------------

TOKENS = [
    *COLUMNS, "sample", "0", "1", "-1", "30", "1024", "9223372036854775807", "99999999999999999999",
    "1.5", "'chr1'", '"M"', "b'x'", "None", "True", "False", "==", "!=", "<", "<=", ">", ">=", "and",
    "or", "not", "in", "is", "+", "-", "*", "/", "//", "%", "**", "&", "|", "^", "~", "<<", "(", ")",
    "[", "]", "{", "}", ",", ":", ".", "lambda", "if", "else", "__import__('os').system('true')",
    "open('/etc/passwd')", "mapq.bit_length()", "[x for x in 'ab']", "f'{mapq}'", "...", "\\", "\n", "#",
]


@FUZZ
@given(
    st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join)
    | st.text(max_size=40)
    | st.text(alphabet=st.sampled_from(list("mapqflag0123456789 ()&|~<>=!'\"andornotin+-*")), max_size=40)
)
def test_fuzz_filter_text_only_filter_errors(records: pa.Table, text: str) -> None:
    try:
        flt = compile_filter(text)
    except FilterError as exc:
        assert "\n" not in str(exc)
        return
    try:
        mask = flt.mask(records)
    except FilterError:
        return
    assert len(mask) == records.num_rows
    assert pa.types.is_boolean(mask.type)


def test_deep_and_long_filters_are_filter_errors(records: pa.Table) -> None:
    for text in ("(" * 5000 + "mapq > 1" + ")" * 5000, "not " * 3000 + "mapq > 1",
                 " + ".join(["mapq"] * 3000) + " > 1", "mapq > 1 and " * 2000 + "True"):
        with pytest.raises(FilterError):
            compile_filter(text).mask(records)


# -- random well-typed expressions against Python ---------------------------

def _ints() -> st.SearchStrategy[str]:
    leaves = st.sampled_from(INT_COLUMNS) | st.integers(-5000, 5000).map(str)
    unary = ["-", "~"]
    binary = ["+", "-", "*", "&", "|", "^"]
    return st.recursive(
        leaves,
        lambda c: st.builds(lambda op, a: f"({op}{a})", st.sampled_from(unary), c)
        | st.builds(lambda a, op, b: f"({a} {op} {b})", c, st.sampled_from(binary), c),
        max_leaves=6,
    )


def _strs() -> st.SearchStrategy[str]:
    literal = st.text(alphabet=st.sampled_from(list("ACGTNM*=chr12_r:0-")), max_size=4).map(repr)
    return st.sampled_from(STR_COLUMNS) | literal


def _conditions() -> st.SearchStrategy[str]:
    cmp = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
    ints, strs = _ints(), _strs()
    leaves = (
        st.builds(lambda a, op, b: f"({a} {op} {b})", ints, cmp, ints)
        | st.builds(lambda a, o1, b, o2, c: f"({a} {o1} {b} {o2} {c})", ints, cmp, ints, cmp, ints)
        | st.builds(lambda a, op, b: f"({a} {op} {b})", strs, cmp, strs)
        | st.builds(lambda a, neg, vals: f"({a} {neg}in {vals!r})", ints, st.sampled_from(["", "not "]),
                    st.tuples(st.integers(-5, 200), st.integers(0, 4096)))
        | st.builds(lambda t, c: f"({t!r} in {c})", st.text(alphabet="ACGTMr1", max_size=3),
                    st.sampled_from(STR_COLUMNS))
        | st.sampled_from(["True", "False"])
    )
    return st.recursive(
        leaves,
        lambda c: st.builds(lambda a, op, b: f"({a} {op} {b})", c, st.sampled_from(LOGIC), c)
        | c.map(lambda a: f"(not {a})"),
        max_leaves=5,
    )


@FUZZ
@given(_conditions())
@example("(flag in (-1, 0))")  # found by this test: signed literals in 'in' lists were refused
@example("((-pos) not in (-100, +4)) and (mapq in (-(-60),))")
def test_fuzz_filter_agrees_with_python(records: pa.Table, text: str) -> None:
    flt = compile_filter(text)
    try:
        mask = flt.mask(records)
    except FilterError as exc:
        # Checked arithmetic: int64 overflow is reported, never wrapped around.
        assert "overflow" in str(exc), exc
        return
    rows = records.select(INT_COLUMNS + STR_COLUMNS).to_pylist()
    expected = [bool(eval(text, {"__builtins__": {}}, row)) for row in rows]  # noqa: S307 - our own expression
    assert np.asarray(mask.to_pylist(), dtype=bool).tolist() == expected, text
    assert set(flt.columns) <= set(INT_COLUMNS + STR_COLUMNS)


def test_no_python_warning_escapes_filter_parsing() -> None:
    """The filter's error (or result) is the only message: Python's SyntaxWarning for texts
    like ``30and`` (found by the fuzzer, printed on stderr) is not let through."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compile_filter("mapq >= 30and flag > 0").columns == ("flag", "mapq")
        with pytest.raises(FilterError):
            compile_filter("0x1g > mapq")
