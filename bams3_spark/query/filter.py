"""The one record filter language: ``--filter`` expressions and Spark's pushed filters.

:func:`compile_filter` turns a Python-syntax expression (``mapq >= 30 and
flag & 1024 == 0``) into pyarrow compute calls; nothing is ever evaluated by
Python. :class:`Predicate` is one comparison on one column, the form Spark
pushes to the ``bams3`` data source; it is evaluated with the same column
rules (integers compared as int64, strings as strings), and also decided on
a chunk's index bounds so whole chunks are skipped or kept unread.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from bams3_spark.arrays import bool_array
from bams3_spark.exceptions import FilterError, one_line
from bams3_spark.format.schema import COLUMNS, INT_COLUMNS
from bams3_spark.query.arrays import BOOL, INT, STR, const_array

#: Longest accepted filter expression (hostile input).
MAX_FILTER_CHARS = 4096

# pyarrow.compute function names (the module is imported when a filter is
# compiled: a plain count never needs it, and it takes ~50 ms to import).
_CMP = {
    ast.Eq: "equal",
    ast.NotEq: "not_equal",
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
}
_CMP_TEXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_ARITH = {ast.Add: "add_checked", ast.Sub: "subtract_checked", ast.Mult: "multiply_checked"}
_BITS = {ast.BitAnd: "bit_wise_and", ast.BitOr: "bit_wise_or", ast.BitXor: "bit_wise_xor"}
_LOGIC = {ast.BitAnd: "and_", ast.BitOr: "or_", ast.BitXor: "xor"}
_STR_COLUMNS = frozenset(COLUMNS) - INT_COLUMNS
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

Evaluator = Callable[[pa.Table], Any]


def column_values(column: pa.Array | pa.ChunkedArray, name: str) -> pa.Array | pa.ChunkedArray:
    """A record column as filters compare it: integers as int64 (literals beyond int32 then
    compare instead of overflowing), strings as they are."""
    import pyarrow.compute as pc

    return pc.cast(column, pa.int64()) if name in INT_COLUMNS else column


def _show(text: str) -> str:
    """Quote a filter for a one-line message (long ones are shortened)."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


@dataclass(frozen=True)
class RecordFilter:
    """A compiled ``--filter`` expression.

    Attributes:
        text: The expression as written.
        columns: The record columns it reads.
    """

    text: str
    columns: tuple[str, ...]
    _fn: Evaluator = field(repr=False, compare=False)

    def mask(self, table: pa.Table) -> pa.Array:
        """Evaluate the filter on a table; return a boolean mask (one per row)."""
        try:
            result = self._fn(table)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise FilterError(f"filter {_show(self.text)}: {one_line(exc)}") from None
        if isinstance(result, pa.Scalar):
            return bool_array(np.full(table.num_rows, bool(result.as_py())))
        if isinstance(result, pa.ChunkedArray):
            result = result.combine_chunks()
        return result


def compile_filter(text: str) -> RecordFilter:
    """Compile a filter expression on record columns.

    The syntax is Python's expression syntax restricted to: column names
    (``qname flag rname pos end mapq cigar rnext pnext tlen seq qual tags``),
    integer and string literals, ``True``/``False``, comparisons
    (``== != < <= > >=``, chained), ``and``/``or``/``not``, integer
    arithmetic ``+ - *``, bitwise ``& | ^ ~`` on integers, ``x in (a, b)``
    membership, and ``"text" in column`` substring tests. As in Python,
    ``flag & 1024 == 0`` means ``(flag & 1024) == 0``. Nothing is ever
    evaluated by Python: the syntax tree is translated into pyarrow compute
    calls.

    Args:
        text: The expression, e.g. ``mapq >= 30 and flag & 1024 == 0``.

    Returns:
        The compiled filter.

    Raises:
        FilterError: For a syntax error, an unknown column, a type mismatch,
            or an expression that is not a condition.
    """
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"filter is too long ({len(text)} characters, at most {MAX_FILTER_CHARS})")
    try:
        # Python warns on stderr about some texts (``30and``): the message below is the one line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise FilterError(f"filter {_show(text)}: syntax error at column {exc.offset or 0}") from None
    except (ValueError, RecursionError, MemoryError):
        raise FilterError(f"filter {_show(text)}: cannot parse") from None
    used: set[str] = set()
    try:
        fn, kind = _compile(tree.body, text, used)
    except RecursionError:
        raise FilterError(f"filter {_show(text)}: too deeply nested") from None
    if kind != BOOL:
        raise FilterError(f"filter {_show(text)}: not a condition (it gives {kind}, e.g. write 'mapq >= 30')")
    return RecordFilter(text, tuple(c for c in COLUMNS if c in used), fn)


def _compile(node: ast.AST, text: str, used: set[str]) -> tuple[Evaluator, str]:
    import pyarrow.compute as pc

    def fail(msg: str) -> FilterError:
        return FilterError(f"filter {_show(text)}: {msg}")

    if isinstance(node, ast.Name):
        name = node.id
        if name not in COLUMNS:
            raise fail(f"unknown column {name!r}; columns are {', '.join(COLUMNS)}")
        used.add(name)
        return (lambda t: column_values(t.column(name), name)), INT if name in INT_COLUMNS else STR
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            scalar = const_array([value], BOOL)[0]
            return (lambda t: scalar), BOOL
        if isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise fail(f"integer {value} out of range")
            scalar = const_array([value], INT)[0]
            return (lambda t: scalar), INT
        if isinstance(value, str):
            scalar = const_array([value], STR)[0]
            return (lambda t: scalar), STR
        raise fail(f"unsupported literal {value!r}")
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, text, used) for v in node.values]
        if any(k != BOOL for _, k in parts):
            raise fail("'and'/'or' need conditions on both sides")
        op = pc.and_ if isinstance(node.op, ast.And) else pc.or_
        fns = [f for f, _ in parts]

        def boolop(t: pa.Table) -> Any:
            acc = fns[0](t)
            for f in fns[1:]:
                acc = op(acc, f(t))
            return acc

        return boolop, BOOL
    if isinstance(node, ast.UnaryOp):
        operand, kind = _compile(node.operand, text, used)
        if isinstance(node.op, ast.Not):
            if kind != BOOL:
                raise fail("'not' needs a condition (use ~ for a bitwise not)")
            return (lambda t: pc.invert(operand(t))), BOOL
        if isinstance(node.op, ast.Invert):
            if kind == INT:
                return (lambda t: pc.bit_wise_not(operand(t))), INT
            if kind == BOOL:
                return (lambda t: pc.invert(operand(t))), BOOL
        if isinstance(node.op, ast.USub) and kind == INT:
            return (lambda t: pc.negate_checked(operand(t))), INT
        if isinstance(node.op, ast.UAdd) and kind == INT:
            return operand, INT
        raise fail(f"operator {type(node.op).__name__} does not apply to {kind}")
    if isinstance(node, ast.BinOp):
        left, lk = _compile(node.left, text, used)
        right, rk = _compile(node.right, text, used)
        op_type = type(node.op)
        if op_type in _ARITH and lk == rk == INT:
            arith = getattr(pc, _ARITH[op_type])
            return (lambda t: arith(left(t), right(t))), INT
        if op_type in _BITS and lk == rk == INT:
            bits = getattr(pc, _BITS[op_type])
            return (lambda t: bits(left(t), right(t))), INT
        if op_type in _LOGIC and lk == rk == BOOL:
            logic = getattr(pc, _LOGIC[op_type])
            return (lambda t: logic(left(t), right(t))), BOOL
        raise fail(f"operator {op_type.__name__} does not apply to {lk} and {rk}")
    if isinstance(node, ast.Compare):
        if any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if len(node.ops) != 1:
                raise fail("'in' cannot be chained with other comparisons")
            member = _compile_in(node.left, node.comparators[0], text, used, fail)
            if isinstance(node.ops[0], ast.NotIn):
                return (lambda t: pc.invert(member(t))), BOOL
            return member, BOOL
        tests: list[Evaluator] = []
        left, lk = _compile(node.left, text, used)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right, rk = _compile(comparator, text, used)
            if type(op) not in _CMP:
                raise fail(f"unsupported comparison {type(op).__name__}")
            if lk != rk or lk == BOOL:
                raise fail(f"cannot compare {lk} with {rk} using {_CMP_TEXT[type(op)]}")
            tests.append(_comparison(getattr(pc, _CMP[type(op)]), left, right))
            left, lk = right, rk

        def chain(t: pa.Table) -> Any:
            acc = tests[0](t)
            for f in tests[1:]:
                acc = pc.and_(acc, f(t))
            return acc

        return chain, BOOL
    raise fail(f"unsupported syntax {type(node).__name__}")


def _comparison(cmp: Callable[..., Any], left: Evaluator, right: Evaluator) -> Evaluator:
    return lambda t: cmp(left(t), right(t))


def _compile_in(
    left_node: ast.AST,
    right_node: ast.AST,
    text: str,
    used: set[str],
    fail: Callable[[str], FilterError],
) -> Evaluator:
    import pyarrow.compute as pc

    if isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
        left, lk = _compile(left_node, text, used)
        values: list[int | str] = []
        want = int if lk == INT else str
        for elt in right_node.elts:
            # A signed number is a unary operator on a literal in Python's syntax tree.
            sign = 1
            while isinstance(elt, ast.UnaryOp) and isinstance(elt.op, (ast.USub, ast.UAdd)):
                sign = -sign if isinstance(elt.op, ast.USub) else sign
                elt = elt.operand
            if not isinstance(elt, ast.Constant) or isinstance(elt.value, bool):
                raise fail("'in' needs a list of literals, e.g. rname in ('chr1', 'chr2')")
            value = elt.value
            if sign < 0:
                if not isinstance(value, int):
                    raise fail("'in' needs a list of literals, e.g. rname in ('chr1', 'chr2')")
                value = -value
            if lk == BOOL or not isinstance(value, want):
                raise fail(f"the 'in' list must hold {lk} literals")
            if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                raise fail(f"integer {value} out of range")
            values.append(value)
        value_set = const_array(values, lk)
        return lambda t: pc.is_in(left(t), value_set=value_set)
    if (
        isinstance(right_node, ast.Name)
        and right_node.id in _STR_COLUMNS
        and isinstance(left_node, ast.Constant)
        and isinstance(left_node.value, str)
    ):
        column, _ = _compile(right_node, text, used)
        pattern = left_node.value
        return lambda t: pc.match_substring(column(t), pattern)
    raise fail("'in' needs a list of literals on the right, or \"text\" in a text column")


# --------------------------------------------------------------------------
# Predicates: the comparisons Spark pushes down, decided on rows and on chunks
# --------------------------------------------------------------------------

#: Predicate operators and the pyarrow compute function of each comparison.
_PREDICATE_CMP = {"eq": "equal", "gt": "greater", "ge": "greater_equal", "lt": "less", "le": "less_equal"}
STRING_ONLY_OPS = frozenset({"startswith", "endswith", "contains"})


@dataclass(frozen=True)
class Predicate:
    """One comparison on one column, applied exactly to rows: ``column op value``, maybe negated.

    Every record column is non-nullable, so ``NOT p`` is the exact complement
    of ``p`` and comparisons never yield NULL: evaluating the comparison with
    Arrow compute gives exactly Spark's answer.

    Attributes:
        column: Column name (record column, or ``sample`` for the Spark source).
        op: ``eq``, ``gt``, ``ge``, ``lt``, ``le``, ``in``, ``isnull``,
            ``isnotnull``, ``startswith``, ``endswith`` or ``contains``.
        value: The literal (a tuple for ``in``; None for the null tests).
        negated: True for ``NOT (column op value)``.
    """

    column: str
    op: str
    value: Any = None
    negated: bool = False

    def mask(self, column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """Return the boolean mask of the rows this predicate keeps, given the column's values."""
        import pyarrow.compute as pc

        op = self.op
        if op == "isnull":
            result = pc.is_null(column)
        elif op == "isnotnull":
            result = pc.is_valid(column)
        else:
            values = column_values(column, self.column)
            if op == "in":
                result = pc.is_in(values, value_set=const_array(list(self.value), self._kind))
            elif op == "startswith":
                result = pc.starts_with(values, pattern=self.value)
            elif op == "endswith":
                result = pc.ends_with(values, pattern=self.value)
            elif op == "contains":
                result = pc.match_substring(values, pattern=self.value)
            else:
                literal = const_array([self.value], self._kind)[0]
                result = getattr(pc, _PREDICATE_CMP[op])(values, literal)
        return pc.invert(result) if self.negated else result

    @property
    def _kind(self) -> str:
        return INT if self.column in INT_COLUMNS else STR

    def on_value(self, value: str | int) -> bool:
        """Evaluate on a constant column value (``rname`` of a chunk, ``sample`` of a dataset)."""
        kind = STR if isinstance(value, str) else INT
        return bool(self.mask(const_array([value], kind))[0].as_py())

    def on_range(self, lo: int, hi: int) -> bool | None:
        """Evaluate on every value in ``[lo, hi]``: True/False if all rows agree, None if unknown."""
        v = self.value
        result: bool | None
        if self.op == "isnull":
            result = False
        elif self.op == "isnotnull":
            result = True
        elif self.op == "eq":
            result = False if v < lo or v > hi else (True if lo == hi == v else None)
        elif self.op == "gt":
            result = True if lo > v else (False if hi <= v else None)
        elif self.op == "ge":
            result = True if lo >= v else (False if hi < v else None)
        elif self.op == "lt":
            result = True if hi < v else (False if lo >= v else None)
        elif self.op == "le":
            result = True if hi <= v else (False if lo > v else None)
        elif self.op == "in":
            if all(x < lo or x > hi for x in v):
                result = False
            else:
                result = True if lo == hi and lo in v else None
        else:
            return None
        if result is None or not self.negated:
            return result
        return not result
