"""A table's cells as rows: the checked, numeric form a table VAE trains on.

A table VAE takes a batch in either of two forms:

- cells, a dict {column: `[batch]` values}: numbers with NaN for a missing
  cell, categories as strings ("" missing) or int codes (-1 missing). This
  is the form a user, a DataFrame (`tables.table_columns`) and a served
  request (`tfvae.table_signatures`) give.
- rows, float32 `[batch, columns]` in the schema's column order: numbers in
  the data's own units, categories as their codes, NaN where a cell is
  missing. `RowObserver` makes rows of cells, checking every cell on the
  way; `tables.table_batches` and `StreamedTable`'s batches are rows.

Rows are what the likelihood scores, and all a training step needs: a step
given rows runs no string lookups and no checks, so it compiles with XLA.
A step given cells looks its categories up in hash tables and checks its
cells with `tf.debugging.Assert`, neither of which XLA compiles: under XLA
(`jit_compile`), cells are refused, naming the fix. Rows are trusted as
given: make them with `RowObserver` (or `tables.table_batches`), which
checks them.
"""

import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from tfvae import row_distribution, table_typing


def _refuse_cells(bad: tf.Tensor, messages: list[str], shown: tf.Tensor):
    """Stops the step if a cell is bad: the first bad column's message and cells.

    Args:
        bad: bool `[batch, n]`, True for a cell outside its column.
        messages: one per column, naming it.
        shown: `[batch, n]`, the cells as the message shows them.
    """
    column = tf.argmax(tf.reduce_any(bad, axis=0), output_type=tf.int32)
    tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [
            tf.gather(tf.constant(messages), column),
            tf.boolean_mask(
                tf.gather(shown, column, axis=-1), tf.gather(bad, column, axis=-1)
            ),
        ],
    )


def _in_xla() -> bool:
    """Whether the function being traced compiles with XLA (`jit_compile`)."""
    # TensorFlow's own test, which Keras 2 used too; it has no public name.
    graph = tf.compat.v1.get_default_graph()
    return control_flow_util.GraphOrParentsInXlaContext(graph)


class RowObserver(tf.Module):
    """Cells {column: `[batch]`} -> rows float32 `[batch, columns]`, checked.

    A category the schema never saw, an int code out of range, or a number
    outside its column's support (`table_typing.in_support`: finite, and
    whole for counts) stops the step with an error naming the column. Each
    check and conversion runs once per column type, not per column.

    Args:
        schema: the table's schema (`tables.infer_schema`).

    Example:
        >>> observe = RowObserver({"columns": [
        ...     {"name": "size", "type": "real", "mean": 0.0, "std": 1.0},
        ...     {"name": "kind", "type": "categorical", "categories": ["a", "b"]}]})
        >>> observe({"size": [1.5, float("nan")], "kind": ["b", ""]}).numpy()
        array([[1.5, 1. ],
               [nan, nan]], dtype=float32)
    """

    def __init__(self, schema: dict):
        super().__init__(name="row_observer")
        # Only new objects are attributes: a tf.Module wraps what it holds
        # for tracking, which must not reach the caller's schema.
        columns = schema["columns"]
        self.names = tuple(c["name"] for c in columns)
        groups = table_typing.positions_by_type([c["type"] for c in columns])
        # One group per type present: its columns' names.
        self._groups = tuple(
            (kind, tuple(self.names[i] for i in where)) for kind, where in groups
        )
        self._inverse = row_distribution.column_order([where for _, where in groups])
        categorical = [c for c in columns if c["type"] == "categorical"]
        self._counts = {c["name"]: len(c["categories"]) for c in categorical}
        self._tables = {
            c["name"]: tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(c["categories"]),
                    tf.range(len(c["categories"]), dtype=tf.int64),
                ),
                default_value=-1,
            )
            for c in categorical
        }

    def check_batch(self, data):
        """Returns a batch's cells (a dict, in the schema's order) or its rows.

        Raises:
            ValueError: not a dict or a float32 `[batch, columns]` tensor;
                columns missing or extra (named); cells under XLA.
        """
        if isinstance(data, dict):
            return self._check_cells(data)
        rows = tf.convert_to_tensor(data) if hasattr(data, "dtype") else None
        width = len(self.names)
        if rows is None or rows.dtype != tf.float32 or rows.shape.rank != 2:
            raise ValueError(
                "A table VAE takes cells {column name: [batch] values}, or rows "
                f"float32 [batch, {width}] as `tfvae.table_batches` makes them. "
                f"Received: {_described(data)}"
            )
        if rows.shape[1] is not None and rows.shape[1] != width:
            raise ValueError(
                f"Rows hold the table's {width} columns. Received: rows of shape "
                f"{rows.shape.as_list()}"
            )
        return rows

    def _check_cells(self, data: dict) -> dict[str, tf.Tensor]:
        missing = sorted(set(self.names) - set(data))
        extra = sorted(set(data) - set(self.names))
        if missing or extra:
            raise ValueError(
                f"A batch must hold the table's columns. Missing: {missing}; "
                f"extra: {extra}"
            )
        if _in_xla():
            raise ValueError(
                "This table VAE is compiled with XLA (jit_compile), which cannot "
                "look categories up or check cells: give it rows, as "
                "`tfvae.table_batches(frame, schema, ...)` makes them, or compile "
                "it with jit_compile=False to give cells {column: values}. "
                "Received: cells"
            )
        return {name: tf.convert_to_tensor(data[name]) for name in self.names}

    def __call__(self, batch) -> tf.Tensor:
        """Returns the rows of a batch of cells (rows are returned as they are).

        Args:
            batch: cells {column: `[batch]`}, or rows float32 `[batch, columns]`.

        Returns:
            float32 `[batch, columns]`: numbers as they are, categories as
            their codes, NaN where a cell is missing.
        """
        batch = self.check_batch(batch)
        if not isinstance(batch, dict):
            return batch
        return row_distribution.in_column_order(
            [
                self._codes(names, batch)
                if kind == "categorical"
                else self._numbers(kind, names, batch)
                for kind, names in self._groups
            ],
            self._inverse,
        )

    def _codes(self, names: tuple[str, ...], cells: dict) -> tf.Tensor:
        """Returns categorical columns' codes, float32 `[batch, n]` (NaN missing)."""
        codes, bad, shown, messages = [], [], [], []
        for name in names:
            values, count = cells[name], self._counts[name]
            if values.dtype == tf.string:
                code = self._tables[name].lookup(values)
                bad.append(tf.logical_and(code < 0, tf.not_equal(values, "")))
                shown.append(values)
                messages.append(
                    f"Column `{name}` holds a category the model never saw:"
                )
            elif values.dtype.is_integer:
                code = tf.cast(values, tf.int64)
                bad.append((code < -1) | (code >= count))
                shown.append(tf.strings.as_string(code))
                messages.append(
                    f"Column `{name}`'s codes must be -1 (missing) to {count - 1}:"
                )
            else:
                raise ValueError(
                    f"Column {name!r} is categorical: give its cells as strings or "
                    f"int codes. Received: {values.dtype.name}"
                )
            codes.append(code)
        _refuse_cells(tf.stack(bad, axis=-1), messages, tf.stack(shown, axis=-1))
        codes = tf.stack(codes, axis=-1)
        return tf.where(codes < 0, float("nan"), tf.cast(codes, tf.float32))

    @staticmethod
    def _numbers(kind: str, names: tuple[str, ...], cells: dict) -> tf.Tensor:
        """Returns number columns of one type, float32 `[batch, n]`, checked."""
        for name in names:
            if cells[name].dtype == tf.string:
                raise ValueError(
                    f"Column {name!r} is {kind}: give numbers (NaN for a "
                    "missing cell). Received: strings"
                )
        values = tf.stack([tf.cast(cells[n], tf.float32) for n in names], -1)
        fits = table_typing.in_support(kind, values)
        bad = tf.logical_not(fits) & tf.logical_not(tf.math.is_nan(values))
        messages = [f"Column `{n}` is {kind} but holds" for n in names]
        _refuse_cells(bad, messages, values)
        return values


def _described(data) -> str:
    if hasattr(data, "dtype") and hasattr(data, "shape"):
        return f"a {type(data).__name__} of dtype {data.dtype} and shape {data.shape}"
    return f"a {type(data).__name__}"
