"""Keras callbacks for training: NaN guard, throughput, image summaries, IWAE."""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfvae import adapters, images, iwae, run_dir


class RaiseOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with a clear error at the first NaN or Inf negative ELBO.

    Raising (instead of Keras's `TerminateOnNaN`, which stops quietly) keeps
    the last epoch's backup untouched and tells the user which step failed.
    """

    def __init__(self, backup_dir: str):
        super().__init__()
        self.backup_dir = backup_dir
        self._epoch = 0
        self._batches_checked = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._batches_checked = 0

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1 Keras calls this after the last of
        # several steps (`batch` is its 0-based index in the epoch); the logs
        # are running means over the epoch, so the first non-finite value
        # falls in the steps run since the previous call.
        first, last = self._batches_checked + 1, batch + 1
        self._batches_checked = last
        value = (logs or {}).get("neg_elbo")
        # A scalar, or shape [1] under MultiWorkerMirroredStrategy.
        if value is not None and not np.isfinite(np.asarray(value)).all():
            step = int(self.model.optimizer.iterations.numpy())
            where = (
                f"at training step {step} (epoch {self._epoch + 1}, batch {last})"
                if first == last
                else f"in training steps {step - last + first}-{step} (epoch "
                f"{self._epoch + 1}, batches {first}-{last})"
            )
            raise FloatingPointError(
                f"The negative ELBO became {value} {where}. The last good "
                f"state is the backup in {self.backup_dir}; rerunning the same "
                "command resumes from it. Lower --learning_rate, or check the "
                "data for values the likelihood cannot score."
            )


class Throughput(keras.callbacks.Callback):
    """Times the training part of every epoch (validation excluded)."""

    def __init__(self, examples_per_epoch: int):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self.epoch_seconds: list[float] = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        # Inside fit, validation starts when the epoch's training ends.
        if self._start is not None:
            self.epoch_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_epoch_end(self, epoch, logs=None):
        self.on_test_begin()

    def summary(self) -> dict:
        """Returns timing figures for metrics.json ({} if no epoch ran)."""
        if not self.epoch_seconds:
            return {}
        # The first epoch includes tracing and XLA compilation.
        steady = self.epoch_seconds[1:] or self.epoch_seconds
        seconds = sum(steady) / len(steady)
        return {
            "first_epoch_s": round(self.epoch_seconds[0], 3),
            "seconds_per_epoch": round(seconds, 3),
            "train_examples_per_s": round(self.examples_per_epoch / seconds, 1),
        }


class ImageSummaries(keras.callbacks.Callback):
    """Every epoch, writes test reconstructions and prior samples to TensorBoard."""

    def __init__(self, log_dir: str, test_images: tf.Tensor, seed: int):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.test_images = test_images
        self.seed = seed

    def on_epoch_end(self, epoch, logs=None):
        samples = images.prior_samples(self.model, 64, self.seed)
        with self.writer.as_default():
            tf.summary.image(
                "reconstructions (inputs above, reconstructions below)",
                images.reconstructions(self.model, self.test_images)[None],
                step=epoch + 1,
            )
            tf.summary.image(
                "prior samples (mean of p(x|z))",
                images.grid(samples, 8)[None],
                step=epoch + 1,
            )
        self.writer.flush()


class IWAECallback(keras.callbacks.Callback):
    """Every `every_n_epochs` epochs, estimates the test NLL with the IWAE bound.

    Uses `evaluate_batches` with k = `num_samples` on `test_images` (a dataset
    of `uint8 [batch, H, W, C]`), the same seed every time so the curve shows
    the model changing, not the noise. Logs `epoch_nll_k<k>` and
    `epoch_neg_elbo` to TensorBoard in `<log_dir>/iwae` at step = epoch index
    (as Keras's TensorBoard callback does) and appends a row (epoch from 0,
    num_importance_samples, neg_elbo, nll) to `<model_dir>/iwae_history.csv`,
    which `tfvae.evaluate` plots.
    """

    def __init__(
        self,
        test_images: tf.data.Dataset,
        num_samples: int,
        every_n_epochs: int,
        model_dir: str,
        samples_per_chunk: int = 200,
        seed: int = 0,
        jit_compile: bool = False,
    ):
        super().__init__()
        iwae.sweep(num_samples)
        iwae.chunk_sizes(num_samples, samples_per_chunk)
        if every_n_epochs < 1:
            raise ValueError(
                "every_n_epochs must be at least 1. Received: "
                f"every_n_epochs={every_n_epochs}"
            )
        self.test_images = test_images
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.model_dir = model_dir
        self.samples_per_chunk = samples_per_chunk
        self.seed = seed
        self.jit_compile = jit_compile
        self.writer = tf.summary.create_file_writer(
            os.path.join(run_dir.path(model_dir, run_dir.LOGS), "iwae")
        )
        self._evaluable = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        if self._evaluable is None:
            self._evaluable = adapters.VAEAdapter(self.model, self.jit_compile)
        means = iwae.evaluate_batches(
            self._evaluable,
            self.test_images,
            self.num_samples,
            self.samples_per_chunk,
            self.seed,
        )
        logging.info(
            "Epoch %d: test -ELBO %.3f, IWAE -L_%d %.3f nats.",
            epoch + 1,
            means["neg_elbo"],
            self.num_samples,
            means["nll"],
        )
        with self.writer.as_default():
            tf.summary.scalar(f"epoch_nll_k{self.num_samples}", means["nll"], epoch)
            tf.summary.scalar("epoch_neg_elbo", means["neg_elbo"], epoch)
        self.writer.flush()
        run_dir.append_iwae_history(
            self.model_dir, (epoch, self.num_samples, means["neg_elbo"], means["nll"])
        )
