"""Keras callbacks for training: backups, NaN guard, throughput, images, IWAE."""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfvae import adapters, history, images, iwae, resume, run_dir


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore` of a run, checksummed, with no silent fallback.

    Backs up every epoch into `<model_dir>/backup`, keeping the previous
    epoch's backup too (`double_checkpoint`) and both after training (a rerun
    of a finished run trains nothing). After each save it writes the sha256 of
    the backup's files beside them (`resume.write_backup_checksums`), so a
    damaged backup is detected, not restored. `resume.restore_backup`
    checks them before `fit` and puts the newest intact backup in place; this
    callback then restores it, and raises if that fails, where Keras would
    quietly fall back to the previous backup, without rewinding the data or
    the history.
    """

    def __init__(self, model_dir: str):
        super().__init__(
            run_dir.path(model_dir, run_dir.BACKUP),
            double_checkpoint=True,
            delete_checkpoint=False,
        )

    def on_train_begin(self, logs=None):
        self._load_model()

    def _save_model(self):
        resume.keep_previous_checksums(self.backup_dir)
        super()._save_model()
        resume.write_backup_checksums(self.backup_dir)


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
            # This process's epochs only: a resumed run's earlier ones are not here.
            "train_seconds": round(sum(self.epoch_seconds), 1),
            "first_epoch_s": round(self.epoch_seconds[0], 3),
            "seconds_per_epoch": round(seconds, 3),
            "train_examples_per_s": round(self.examples_per_epoch / seconds, 1),
        }


class ImageSummaries(keras.callbacks.Callback):
    """Every epoch, writes test reconstructions and prior samples to TensorBoard."""

    def __init__(
        self,
        log_dir: str,
        test_images: tf.Tensor,
        seed: int,
        test_labels: tf.Tensor | None = None,
    ):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.test_images = test_images
        # The images' classes, for a conditional VAE.
        self.test_labels = test_labels
        self.seed = seed

    def on_epoch_end(self, epoch, logs=None):
        samples = images.prior_samples(self.model, 64, self.seed)
        with self.writer.as_default():
            tf.summary.image(
                "reconstructions (inputs above, reconstructions below)",
                images.reconstructions(self.model, self.test_images, self.test_labels)[
                    None
                ],
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
        samples_per_chunk: int = iwae.SAMPLES_PER_CHUNK,
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
        history.append_iwae_history(
            self.model_dir, (epoch, self.num_samples, means["neg_elbo"], means["nll"])
        )


class KLWarmup(keras.callbacks.Callback):
    """Raises the VAE's KL weight linearly to its `beta` over `epochs` epochs.

    Epoch e (0-based) trains with weight beta * min(1, (e + 1) / epochs). The
    weight follows the epoch index alone, so a resumed run (which Keras
    restarts at the epoch it resumes) continues at the right weight.
    """

    def __init__(self, epochs: int):
        super().__init__()
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1. Received: {epochs=}")
        self.epochs = epochs

    def weight(self, epoch: int) -> float:
        """Returns the KL weight of epoch `epoch` (0-based)."""
        return self.model.beta * min(1.0, (epoch + 1) / self.epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.weight(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_weight"] = self.weight(epoch)
