"""tfvae: variational autoencoders in TensorFlow, Keras 3 and TensorFlow Probability.

Modules, in the order one batch meets them:
  config      every setting, declared once: the fields of `Config` are the flags
  settings    dataclass fields that are absl flags: define, read, check
  train       `python -m tfvae.train`: flags -> Config -> train_and_evaluate
  training    train_and_evaluate: data, model, fit, metrics, export
  run_dir     the files of a run directory, and reading a run back
  data        TFDS image datasets -> uint8 [batch, H, W, C]
  image_folder  a user's folder of images, built once as a TFDS dataset
  distribute  tf.distribute strategies by name, and each worker's input
  noise       every random stream, and noise independent of replicas
  networks    encoder/decoder bodies (mlp, conv), bodies between latent layers
  heads       Keras 3 layers returning tfd distributions: q(z|x), p(x|z)
  priors      the prior p(z): N(0, I), a learned mixture, the VampPrior
  model       the VAE, its objectives (ELBO, IWAE), train_step/test_step
  callbacks   NaN guard, throughput, TensorBoard pictures, IWAE during training
  iwae        the importance-weighted bound on log p(x), in chunks
  adapters    what evaluation runs on: a Keras VAE or an export's signatures
  images      image grids: reconstructions, samples, interpolations
  plots       matplotlib figures: latent scatter, ELBO curve
  evaluation  `evaluate_run`: the bound and the pictures of a run or an export
  evaluate    `python -m tfvae.evaluate`
  saved_model the SavedModel and its signatures (export/README.md)
  export      `python -m tfvae.export`
  errors      UsageError: a user's mistake, reported without a traceback
"""

__version__ = "0.1.0"
