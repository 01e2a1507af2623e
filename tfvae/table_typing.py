"""Typing a table's columns: one rule per type, for a whole column or chunk by chunk.

A `ColumnSummary` holds what the rules need of a column's training cells (its
dtypes, up to `max_categories + 1` distinct texts, which values break which
type's support, and the moments of the values, their log and their log1p);
`add` folds in one chunk, so a table larger than memory
(`tfvae.table_streaming`) is typed by the same rules as one in memory
(`tables.infer_schema`, one chunk). `column_entry` then types the column (or
takes the given type), checks it and returns its schema entry:

    binary       0/1 numbers, or booleans
    count        integers >= 0
    positive     numbers > 0, more symmetric on a log scale
    real         other numbers
    categorical  strings, at most `max_categories` of them

Example:

    summary = ColumnSummary("age", max_categories=50)
    for chunk in chunks:
        summary.add(chunk["age"])
    column_entry(summary, kind=None)  # {"name": "age", "type": "count", ...}
"""

import math
import typing

import numpy as np
import pandas as pd

from tfvae import errors

# The column types, in the order the inference tries them.
COLUMN_TYPES = ("binary", "count", "positive", "real", "categorical")
# The present cells whose text the date rule reads.
_DATE_SAMPLE = 100
# Each numeric type's support: (the rule, its wording). A rule is written with
# operators alone, so it runs on NumPy arrays and TF tensors alike
# (`TableHead` checks cells by these rules); NaN fits none.
SUPPORT = {
    "binary": (lambda v: (v == 0.0) | (v == 1.0), "0 or 1"),
    "count": (lambda v: (v >= 0) & (v < math.inf) & (v % 1 == 0), "integers >= 0"),
    "positive": (lambda v: (v > 0) & (v < math.inf), "finite and above 0"),
    "real": (lambda v: (v > -math.inf) & (v < math.inf), "finite"),
}
# The scale the model standardizes each type on (`table_likelihood`): the
# values, their logarithm (positive) or log1p (count); defined on the support.
_SCALES = {
    "real": lambda v, ops: v,
    "positive": lambda v, ops: ops.log(v),
    "count": lambda v, ops: ops.log1p(v),
}


def positions_by_type(kinds: list[str]) -> list[tuple[str, np.ndarray]]:
    """Returns each present type with the positions of its columns, in
    `COLUMN_TYPES` order: how a table's likelihood and its row observer
    group the columns, one group per type.

    Example:
        >>> positions_by_type(["real", "binary", "real"])
        [('binary', array([1], dtype=int32)), ('real', array([0, 2], dtype=int32))]
    """
    groups = []
    for kind in COLUMN_TYPES:
        where = np.array([i for i, k in enumerate(kinds) if k == kind], np.int32)
        if len(where):
            groups.append((kind, where))
    return groups


def in_support(kind: str, values):
    """Returns where `values` lie in a numeric type's support (NaN never does).

    Args:
        kind: "binary", "count", "positive" or "real".
        values: float `[...]`, a NumPy array or a TF tensor.

    Returns:
        bool `[...]`, of the input's kind (array or tensor).

    Example:
        >>> in_support("count", np.array([0.0, 1.5, np.inf, 3.0])).tolist()
        [True, False, False, True]
    """
    # inf % 1 is NaN, which fails the test anyway: NumPy's warning says nothing.
    with np.errstate(invalid="ignore"):
        return SUPPORT[kind][0](values)


def to_scale(kind: str, values, ops=np):
    """Returns a number type's values on the scale the model standardizes.

    Args:
        kind: "real", "positive" (log) or "count" (log1p).
        values: float `[...]` in the type's support.
        ops: `np` for arrays, `tf.math` for tensors: the module whose `log`
            and `log1p` apply.

    Returns:
        float `[...]`, as the input.

    Example:
        >>> to_scale("count", np.array([0.0, np.e - 1]))
        array([0., 1.])
    """
    return _SCALES[kind](values, ops)


class _Moments(typing.NamedTuple):
    """Count, mean and the 2nd and 3rd central sums of some values; mergeable."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> "_Moments":
        if not len(values):
            return cls()
        centred = values - values.mean()
        return cls(len(values), values.mean(), np.sum(centred**2), np.sum(centred**3))

    def merge(self, other: "_Moments") -> "_Moments":
        # Pebay (2008): the moments of two parts' union.
        if not other.n or not self.n:
            return other if not self.n else self
        n = self.n + other.n
        delta = other.mean - self.mean
        return _Moments(
            n,
            self.mean + delta * other.n / n,
            self.m2 + other.m2 + delta**2 * self.n * other.n / n,
            self.m3
            + other.m3
            + delta**3 * self.n * other.n * (self.n - other.n) / n**2
            + 3 * delta * (self.n * other.m2 - other.n * self.m2) / n,
        )

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n)

    @property
    def skew(self) -> float:
        return (self.m3 / self.n) / self.std**3 if self.m2 > 0 else 0.0


def category_texts(cells: pd.Series) -> pd.Series:
    """Returns cells as category names: `str`, whole numbers without ".0".

    A CSV's integer column reads as floats where it has a missing cell, or in
    one chunk and not another: its categories are "3", not "3.0", either way.
    """
    if not pd.api.types.is_numeric_dtype(cells) or pd.api.types.is_bool_dtype(cells):
        return cells.astype(str)
    values = cells.to_numpy(np.float64)
    whole = np.abs(values) < 2**53
    whole[whole] = values[whole] == np.round(values[whole])
    texts = cells.astype(str).to_numpy(dtype=object)
    texts[whole] = values[whole].astype(np.int64).astype(str)
    return pd.Series(texts, index=cells.index, dtype=object)


def category_cells(cells: pd.Series) -> pd.Series:
    """Returns cells as `category_texts`' names, "" where missing.

    A categorical column's cells and a label column's are read alike: a text
    "2.0" stays "2.0", a number 2.0 reads as "2".

    Example:
        >>> category_cells(pd.Series([2.0, None])).tolist()
        ['2', '']
    """
    return category_texts(cells).where(cells.notna(), "")


def _parse(cells: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Returns (float64 values, where a present cell is not a number)."""
    values = pd.to_numeric(cells, errors="coerce").to_numpy(np.float64)
    return values, cells.notna().to_numpy() & np.isnan(values)


def numbers(name: str, cells: pd.Series, kind: str) -> np.ndarray:
    """Returns a numeric column's cells as float64, NaN where missing.

    Raises:
        errors.UsageError: a present cell that is not a number, naming it.
    """
    values, bad = _parse(cells)
    if bad.any():
        _refuse_text(name, kind, cells[bad].iloc[0])
    return values


def _refuse_text(name: str, kind: str, cell):
    raise errors.UsageError(
        f"Column {name!r} is {kind} but holds {cell!r}, not a number: fix the "
        "cell, or type the column categorical"
    )


def _refuse_dates(name: str):
    raise errors.UsageError(
        f"Column {name!r} holds dates, which tfvae does not model: drop it or "
        "turn it into numbers (e.g. days since a date, day of the week)"
    )


class ColumnSummary:
    """What the typing rules need of one column's training cells, chunk by chunk.

    Memory holds at most `max_categories + 1` distinct texts and a few
    numbers, whatever the rows.

    Args:
        name: the column's name, for the messages.
        max_categories: the most categories a categorical column may have.
    """

    def __init__(self, name: str, max_categories: int):
        self.name, self.max_categories = name, max_categories
        self.present = 0
        self.dates = False
        # "bool", "number" or "text": the dtypes of the chunks' present cells.
        self.dtypes = set()
        self.first = None
        self.texts = set()
        self.sample = []
        self.not_number = None
        # Each support rule's first value breaking it.
        self.breaks = {}
        self.moments = {kind: _Moments() for kind in _SCALES}

    def add(self, cells: pd.Series) -> "ColumnSummary":
        """Folds in a chunk of the column's cells (missing ones are NaN/None)."""
        is_date = pd.api.types.is_datetime64_any_dtype(cells)
        self.dates |= is_date
        present = cells.dropna()
        if present.empty:
            return self
        if self.first is None:
            self.first = present.iloc[0]
        self.present += len(present)
        is_bool = pd.api.types.is_bool_dtype(present)
        is_number = pd.api.types.is_numeric_dtype(present)
        self.dtypes.add("bool" if is_bool else "number" if is_number else "text")
        if len(self.texts) <= self.max_categories:
            for text in category_texts(present.drop_duplicates()).unique():
                if len(self.texts) > self.max_categories:
                    break  # Enough to refuse the column as categorical.
                self.texts.add(text)
        if len(self.sample) < _DATE_SAMPLE:
            head = present.iloc[: _DATE_SAMPLE - len(self.sample)]
            self.sample += category_texts(head).tolist()
        if is_date or self.not_number is not None:
            return self  # Not numbers: the numeric types are refused anyway.
        values, bad = _parse(present)
        if bad.any():
            self.not_number = present[bad].iloc[0]
        values = values[~bad]
        for kind in SUPPORT:
            fits = in_support(kind, values)
            if kind not in self.breaks and not fits.all():
                self.breaks[kind] = float(values[~fits][0])
        for kind in _SCALES:
            on_support = values[in_support(kind, values)]
            self.moments[kind] = self.moments[kind].merge(
                _Moments.of(to_scale(kind, on_support))
            )
        return self

    def inferred_type(self) -> str:
        """Returns the column's type by the rules, or refuses it naming the fix."""
        name = self.name
        if self.dates:
            _refuse_dates(name)
        if self.dtypes == {"bool"}:
            return "binary"
        if self.dtypes == {"number"}:
            for kind in ("binary", "count"):
                if kind not in self.breaks:
                    return kind
            logs, values = self.moments["positive"], self.moments["real"]
            if "positive" not in self.breaks and abs(logs.skew) < abs(values.skew):
                return "positive"
            return "real"
        if len(self.texts) <= self.max_categories:
            return "categorical"
        sample = pd.Series(self.sample)
        if pd.to_datetime(sample, errors="coerce", format="mixed").notna().all():
            _refuse_dates(name)
        raise errors.UsageError(
            f"Column {name!r} has more distinct values than categories allowed "
            f"(more than max_categories={self.max_categories}): free text or an "
            "identifier cannot be modelled. Drop it, raise max_categories, or "
            "give it a type with "
            f"column_types={{{name!r}: ...}}"
        )


def column_entry(summary: ColumnSummary, kind: str | None) -> dict:
    """Returns a column's schema entry: of type `kind`, or the inferred one.

    Args:
        summary: the column's training cells, summarized.
        kind: the type given for it, or None to infer it.

    Returns:
        {"name", "type", "categories" (categorical), "mean" and "std" (real,
        positive, count: of the values, their log or log1p)}.

    Raises:
        errors.UsageError: the column cannot be modelled, or its cells do not
            fit `kind`; naming the column and the fix.
    """
    name = summary.name
    # Before any type, inferred or given: nothing to model or infer from.
    if not summary.present:
        raise errors.UsageError(
            f"Column {name!r} is entirely missing in the training split: drop it"
        )
    if len(summary.texts) == 1:
        raise errors.UsageError(
            f"Column {name!r} is constant ({summary.first!r}) in the training "
            "split, so there is nothing to model, whatever its type: drop it"
        )
    kind = kind or summary.inferred_type()
    entry = {"name": name, "type": kind}
    if kind == "categorical":
        if len(summary.texts) > summary.max_categories:
            raise errors.UsageError(
                f"Column {name!r} has more categories than allowed (more than "
                f"max_categories={summary.max_categories}): raise max_categories "
                "or drop it"
            )
        return {**entry, "categories": sorted(summary.texts)}
    if summary.dates:
        _refuse_dates(name)
    if summary.not_number is not None:
        _refuse_text(name, kind, summary.not_number)
    if kind in summary.breaks:
        raise errors.UsageError(
            f"Column {name!r} is typed {kind}, whose values are "
            f"{SUPPORT[kind][1]}, but holds {summary.breaks[kind]!r}: fix the "
            "data or give it another type"
        )
    if kind != "binary":
        moments = summary.moments[kind]
        entry.update(mean=float(moments.mean), std=float(moments.std) or 1.0)
    return entry
