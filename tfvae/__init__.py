"""tfvae: variational autoencoders in TensorFlow, Keras 3 and TensorFlow Probability.

The public API, importable from the package's top:

    import keras
    import tfvae

    vae = tfvae.build_vae((28, 28, 1), latent_dim=16)  # tfvae's own networks
    # ... or your own Keras bodies with tfvae's heads and priors:
    vae = tfvae.VAE(
        tfvae.Encoder(my_encoder_body, tfvae.NormalDiagHead(16)),
        tfvae.Decoder(my_decoder_body, tfvae.BernoulliHead()),
        tfvae.StandardNormal(16),
        image_shape=(28, 28, 1),
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    vae.fit(train_images, epochs=10)       # images, (images, labels) or TFDS dicts
    tfvae.evaluate_model(vae, test_images) # {"nll": ..., "neg_elbo": ..., ...}
    tfvae.export_model(vae, "export/my_vae") # a TF Serving model base path
    config, info, vae = tfvae.load_run("runs/mnist")

    # A table: columns typed from the training split, missing cells allowed.
    schema, train, test = tfvae.read_table("wine.csv", test_fraction=0.2)
    vae = tfvae.build_table_vae(schema, latent_dim=4)
    vae.compile(optimizer="adam")
    vae.fit(tfvae.table_batches(train, schema, 32, shuffle_seed=0), epochs=200)
    tfvae.evaluate_table(vae, test)         # {"nll": ..., "log_lik/alcohol": ...}

Names:
  VAE                 the Keras model: `fit`, `evaluate`, `save`, its parts
  Encoder, Decoder    any Keras body followed by a distribution head
  NormalDiagHead, NormalTriLHead
                      posterior heads: features `[batch, F]` -> q(z|x)
  BernoulliHead, ContinuousBernoulliHead, GaussianHead, CategoricalHead,
  LogisticMixtureHead likelihood heads: `[batch, H, W, C, params]` -> p(x|z)
  StandardNormal, MixtureOfGaussians, VampPrior
                      priors p(z) over the top latent layer
  build_vae           a VAE from plain settings, with the command line's defaults
  evaluate_model      the IWAE bound and -ELBO of a VAE or an export (+ pictures)
  export_model        a VAE as a versioned SavedModel for TF Serving
  load_run            a training run's (config, dataset info, VAE)
  read_table, infer_schema
                      a table (DataFrame, dict, CSV, Parquet, .npy/.npz, a
                      folder of train.* and test.*), split, and its schema
  table_batches       a DataFrame as batches of rows [batch, columns] for a table VAE
  TableHead           a row's likelihood: the product of its columns'
  build_table_vae     a VAE of a table's rows, from its schema
  impute, sample_rows a batch's missing cells filled in; rows drawn from the VAE
  evaluate_table      a table VAE's IWAE bound and per-column log-likelihoods,
                      imputation quality, anomaly ROC/PR AUC, a baseline

The names load on first use (PEP 562), so `python -m tfvae.train` does not
import what it does not need (matplotlib, for one). The command line
(`tfvae.train`, `tfvae.evaluate`, `tfvae.export`) is a thin layer over the
same calls; README.md's "How it fits together" lists the modules.
"""

import importlib

__version__ = "0.1.0"

# Public name -> (module, attribute): each name's one owner.
_PUBLIC = {
    "VAE": ("tfvae.model", "VAE"),
    "Encoder": ("tfvae.parts", "Encoder"),
    "Decoder": ("tfvae.parts", "Decoder"),
    "NormalDiagHead": ("tfvae.posteriors", "NormalDiagHead"),
    "NormalTriLHead": ("tfvae.posteriors", "NormalTriLHead"),
    "BernoulliHead": ("tfvae.likelihoods", "BernoulliHead"),
    "ContinuousBernoulliHead": ("tfvae.likelihoods", "ContinuousBernoulliHead"),
    "GaussianHead": ("tfvae.likelihoods", "GaussianHead"),
    "CategoricalHead": ("tfvae.likelihoods", "CategoricalHead"),
    "LogisticMixtureHead": ("tfvae.likelihoods", "LogisticMixtureHead"),
    "StandardNormal": ("tfvae.priors", "StandardNormal"),
    "MixtureOfGaussians": ("tfvae.priors", "MixtureOfGaussians"),
    "VampPrior": ("tfvae.priors", "VampPrior"),
    "build_vae": ("tfvae.builder", "build_vae"),
    # Not `evaluate` and `export`: those names are the command-line modules
    # (`python -m tfvae.evaluate`), which importing would bind over a function.
    "evaluate_model": ("tfvae.evaluation", "evaluate"),
    "export_model": ("tfvae.saved_model", "export"),
    "load_run": ("tfvae.run_dir", "load_run"),
    "read_table": ("tfvae.tables", "read_table"),
    "infer_schema": ("tfvae.tables", "infer_schema"),
    "table_batches": ("tfvae.tables", "table_batches"),
    "TableHead": ("tfvae.table_likelihood", "TableHead"),
    "build_table_vae": ("tfvae.table_model", "build_table_vae"),
    "impute": ("tfvae.table_model", "impute"),
    "sample_rows": ("tfvae.table_model", "sample_rows"),
    "evaluate_table": ("tfvae.table_evaluation", "evaluate_table"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tfvae' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_PUBLIC})
