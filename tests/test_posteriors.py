"""Tests for tfvae.posteriors: q(z|x)'s shapes, reparameterization, validation."""

import numpy as np
import pytest
import tensorflow as tf

from tfvae import distributions, posteriors

BATCH = 3


@pytest.mark.parametrize(
    "head_cls", [posteriors.NormalDiagHead, posteriors.NormalTriLHead]
)
def test_posterior_shapes_and_reparameterization(head_cls):
    head = head_cls(latent_dim=4)
    q = head(tf.random.normal([BATCH, 7], seed=1))
    assert q.batch_shape == [BATCH]
    assert q.event_shape == [4]
    eps = tf.random.normal([6, BATCH, 4], seed=2)
    z = head.reparameterize(q, eps)
    assert z.shape == (6, BATCH, 4)
    # z = loc + scale @ eps: reproduces q's moments when eps is standard normal.
    expected = q.loc + tf.linalg.matvec(q.scale.to_dense(), eps)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)
    assert np.all(q.stddev().numpy() >= distributions.SCALE_FLOOR)


def test_a_posterior_head_needs_features_and_echoes_bad_sizes():
    assert posteriors.NormalDiagHead(2).input_shape_for((8, 8, 1)) == (None, None)
    with pytest.raises(ValueError, match="latent_dim=0"):
        posteriors.NormalDiagHead(latent_dim=0)
