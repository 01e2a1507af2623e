"""A table VAE's export signatures: rows in and out by column name.

`signature_functions(vae, description)` is `tfvae.signatures`'s for a table
VAE (`tfvae.table_model`): the same signatures, noise contract and request
bounds, but a row comes as one input per column, so TF Serving's row format
`{"instances": [{"temp": 12.8, "weather": "rain"}]}` works as users write
it. Numbers are float32 `[batch]`, NaN for a missing cell; categories are
strings `[batch]`, "" for a missing cell. Rows going out (`sample`,
`reconstruct`, `decode`) are one output per column, in the data's units,
categories as strings. export/README.md ("Tables") is the reference.

Input names. A column's input (and output) name is `input_name(column)`:
every character outside `[A-Za-z0-9_]` becomes "_", then "c_" is put in
front of a name that does not start with a letter, is a Python keyword, or
is another input of the signatures (`labels`, `num_samples`, `seed`):
"alcohol %" -> "alcohol__", "2nd" -> "c_2nd", "seed" -> "c_seed". Two
columns that become one name are refused at export. `metadata`'s json maps
every input back to its column ("columns": the schema's columns, each with
its "input").

Noise. As for images, each row's seed comes from its own cells and the
export's fixed seed: `noise.export_seeds(x, vae.seed)` of the observed row x
(float32 `[batch, columns]`, categories as codes, NaN where missing), so a
row's outputs do not depend on its batch. `sample` draws z as the images'
`sample` does (`VAE.sample_latent(num_samples, seed)`), then each row's
cells from p(x|z) with `noise.draw_seed(seed)` (`table_model.sample_rows`):
seed `noise.seed(vae.seed, noise.PRIOR_SAMPLES)` draws the rows of the
run's marginals.png and correlations.png (`tfvae.table_pictures`).
"""

import keyword
import re

import tensorflow as tf

from tfvae import model, noise, signatures
from tfvae.table_model import impute, sample_rows

# The signatures' inputs besides the columns: a column of that name is
# renamed.
_OTHER_INPUTS = ("labels", "num_samples", "seed")


def input_name(column: str) -> str:
    """Returns the export's input name of a column: `column`, made a valid name.

    Args:
      column: a column's name in the schema.

    Returns:
      The name of its input and outputs in the signatures (see the module
      docstring for the rule).

    Example:
      >>> input_name("alcohol %"), input_name("2nd"), input_name("temp")
      ('alcohol__', 'c_2nd', 'temp')
    """
    name = re.sub(r"[^A-Za-z0-9_]", "_", column)
    if (
        not re.match(r"[A-Za-z]", name)
        or keyword.iskeyword(name)
        or name in _OTHER_INPUTS
    ):
        name = "c_" + name
    return name


def input_names(schema: dict) -> dict[str, str]:
    """Returns {column: input name} of a table's schema, in its column order.

    Args:
      schema: the table's schema (`tables.infer_schema`).

    Returns:
      Each column's `input_name`.

    Raises:
      ValueError: two columns whose input names are the same, naming both.

    Example:
      >>> input_names({"columns": [{"name": "pH value"}, {"name": "1st"}]})
      {'pH value': 'pH_value', '1st': 'c_1st'}
    """
    names, columns_of = {}, {}
    for column in (c["name"] for c in schema["columns"]):
        name = input_name(column)
        if name in columns_of:
            raise ValueError(
                f"Columns {columns_of[name]!r} and {column!r} would both be the "
                f"export's input {name!r} (tfvae.table_signatures.input_name): "
                f"rename one of them before training. Received: {column=}"
            )
        names[column], columns_of[name] = name, column
    return names


def describe_columns(schema: dict) -> list[dict]:
    """Returns the schema's columns, each with its export input name ("input").

    What `metadata`'s json reports as "columns", in the order of the
    columns of `score`'s `reconstruction_<input>` outputs.

    Args:
      schema: the table's schema (`tables.infer_schema`).

    Returns:
      One dict per column, in the schema's order: its schema entry plus
      "input" (`input_name`).

    Raises:
      ValueError: two columns whose input names are the same (`input_names`).

    Example:
      >>> describe_columns({"columns": [{"name": "2nd", "type": "binary"}]})
      [{'name': '2nd', 'type': 'binary', 'input': 'c_2nd'}]
    """
    names = input_names(schema)
    return [{**column, "input": names[column["name"]]} for column in schema["columns"]]


def signature_functions(vae: model.VAE, description: dict) -> dict[str, tuple]:
    """Returns {name: (function, input specs)} of a table VAE's signatures.

    Args:
      vae: the table VAE to serve, built outside any strategy.
      description: what `metadata` reports (`saved_model.describe`); its
        `max_samples` and `max_batch_samples` bound the requests.

    Returns:
      As `signatures.signature_functions`: encode, decode, sample, score,
      reconstruct, log_weights and metadata; each row input is a dict
      {input name: `[batch]` spec}.

    Example:
      >>> functions = signature_functions(vae, description)  # doctest: +SKIP
      >>> functions["score"][1]  # [{"temp": TensorSpec, ...}]
    """
    head = vae.likelihood
    columns = head.columns
    names = input_names(head.schema)
    inputs = [names[c["name"]] for c in columns]
    max_samples = description["max_samples"]
    max_batch_samples = description["max_batch_samples"]
    row_specs = {
        names[c["name"]]: tf.TensorSpec(
            [None],
            tf.string if c["type"] == "categorical" else tf.float32,
            name=names[c["name"]],
        )
        for c in columns
    }
    z_spec = tf.TensorSpec([None, vae.latent_dim], tf.float32, name="z")

    def checked_cells(rows, samples=1):
        """Returns {column: `[batch]` cells} of `rows`, checked to be one batch."""
        cells = {
            c["name"]: signatures.checked(rows[name], row_specs[name])
            for c, name in zip(columns, inputs, strict=True)
        }
        first = cells[columns[0]["name"]]
        checks = [
            tf.debugging.assert_equal(
                tf.size(cell),
                tf.size(first),
                message=f"every column must hold one cell per row: {name} holds "
                f"another number of cells than {inputs[0]}",
            )
            for cell, name in zip(cells.values(), inputs, strict=True)
        ]
        first = signatures.checked_rows(first, samples, max_batch_samples)
        return {
            column: signatures.after([*checks, first], cell)
            for column, cell in cells.items()
        }

    def row_outputs(x):
        """Returns {input name: `[batch]`} of rows x, categories as strings."""
        outputs = {}
        for index, (column, name) in enumerate(zip(columns, inputs, strict=True)):
            value = x[:, index]
            if column["type"] == "categorical":
                # A missing cell (NaN, code -1) comes out as "".
                strings = tf.constant(["", *column["categories"]])
                codes = tf.where(tf.math.is_nan(value), -1.0, value)
                value = tf.gather(strings, tf.cast(codes, tf.int32) + 1)
            outputs[name] = value
        return outputs

    def observed(cells):
        """Returns the rows x `[batch, columns]` and each row's seed `[batch, 2]`."""
        x = head.observe(cells, None)
        return x, noise.export_seeds(x, vae.seed)

    def encode(rows, labels=None):
        cells = checked_cells(rows)
        _, row_seeds = observed(cells)
        labels = signatures.checked_labels(vae, labels, row_seeds)
        # The z that score's terms evaluate.
        _, chain = vae.posterior_sample(cells, row_seeds, labels)
        return signatures.posterior_outputs(vae, chain)

    def decode(z, labels=None):
        z = signatures.checked_rows(signatures.checked(z, z_spec), 1, max_batch_samples)
        labels = signatures.checked_labels(vae, labels, z)
        return row_outputs(vae.decode_mean(z, labels))

    def sample(num_samples, seed, labels=None):
        num_samples = signatures.checked_num_samples(num_samples, max_samples)
        labels = signatures.checked_labels(vae, labels, num_samples)
        seed = signatures.checked(seed, signatures.SEED_SPEC)
        return row_outputs(sample_rows(vae, num_samples, seed, labels))

    def score(rows, labels=None):
        cells = checked_cells(rows)
        x, row_seeds = observed(cells)
        labels = signatures.checked_labels(vae, labels, row_seeds)
        terms, chain = vae.objective_terms(cells, row_seeds, labels)
        # Each cell's -log p(cell|z) at the z of the terms, 0 where missing:
        # they sum to `reconstruction`. (A missing cell is 0, not -0.)
        cell_terms = tf.where(
            tf.math.is_nan(x),
            0.0,
            -vae.decode(chain.zs[0], labels).column_log_probs(x),
        )
        return {
            "neg_elbo": terms["reconstruction"] + terms["kl"],
            "reconstruction": terms["reconstruction"],
            "kl": terms["kl"],
            **{
                f"reconstruction_{name}": cell_terms[:, index]
                for index, name in enumerate(inputs)
            },
        }

    def reconstruct(rows, labels=None):
        cells = checked_cells(rows)
        labels = signatures.checked_labels(vae, labels, cells[columns[0]["name"]])
        return row_outputs(impute(vae, cells, labels))

    def log_weights(rows, num_samples, seed, labels=None):
        num_samples = signatures.checked_num_samples(num_samples, max_samples)
        cells = checked_cells(rows, num_samples)
        x, row_seeds = observed(cells)
        labels = signatures.checked_labels(vae, labels, row_seeds)
        _, q = vae.observe_and_encode(cells, row_seeds, labels)
        weights = vae.log_weights(
            x,
            q,
            num_samples,
            # Per row, so a row's z do not depend on its batch.
            noise.example_seeds(x, signatures.checked(seed, signatures.SEED_SPEC)),
            labels,
        )
        return {"log_weights": tf.transpose(weights)}

    def metadata():
        return {
            **signatures.metadata_outputs(vae, description),
            # The columns in the schema's order, and their input names.
            "columns": tf.constant([c["name"] for c in columns]),
            "inputs": tf.constant(inputs),
        }

    labels = [signatures.LABELS_SPEC] if vae.conditional else []
    num_samples_and_seed = [signatures.NUM_SAMPLES_SPEC, signatures.SEED_SPEC]
    return {
        "encode": (encode, [row_specs, *labels]),
        "decode": (decode, [z_spec, *labels]),
        "sample": (sample, [*num_samples_and_seed, *labels]),
        "score": (score, [row_specs, *labels]),
        "reconstruct": (reconstruct, [row_specs, *labels]),
        "log_weights": (log_weights, [row_specs, *num_samples_and_seed, *labels]),
        "metadata": (metadata, []),
    }
