"""tfvae: variational autoencoders in TensorFlow, Keras 3 and TensorFlow Probability.

Modules, in the order one batch meets them:
  data       TFDS image datasets -> uint8 batches [batch, H, W, C]
  networks   encoder/decoder bodies (mlp, conv)
  heads      Keras 3 layers returning tfd distributions: q(z|x), p(x|z)
  model      the VAE, its negative ELBO, train_step/test_step
  train      `python -m tfvae.train`: flags -> Config -> train_and_evaluate
"""

__version__ = "0.1.0"
