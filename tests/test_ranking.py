"""Tests for tfvae.ranking: ROC AUC and average precision against their definitions."""

import numpy as np
import pytest

from tfvae import ranking


def _pairwise_auc(scores, positives):
    """P(a positive scores above a negative), ties half: the AUC by definition."""
    above = scores[positives][:, None] - scores[~positives][None, :]
    return np.mean((above > 0) + 0.5 * (above == 0))


def _precision_at_thresholds(scores, positives):
    """sum (R_n - R_{n-1}) P_n, one threshold per distinct score, highest first."""
    total, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        picked = scores >= threshold
        recall = positives[picked].sum() / positives.sum()
        total += (recall - previous_recall) * positives[picked].mean()
        previous_recall = recall
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_their_definitions_with_ties(seed):
    rng = np.random.default_rng(seed)
    # Few distinct scores: many ties.
    scores = rng.integers(0, 6, size=80).astype(float)
    positives = rng.random(80) < 0.3 + 0.05 * scores
    assert ranking.roc_auc(scores, positives) == pytest.approx(
        _pairwise_auc(scores, positives)
    )
    assert ranking.average_precision(scores, positives) == pytest.approx(
        _precision_at_thresholds(scores, positives)
    )


def test_perfect_chance_and_reversed_rankings():
    positives = np.array([False, False, True, True])
    assert ranking.roc_auc(np.array([1.0, 2, 3, 4]), positives) == 1.0
    assert ranking.average_precision(np.array([1.0, 2, 3, 4]), positives) == 1.0
    assert ranking.roc_auc(np.array([4.0, 3, 2, 1]), positives) == 0.0
    assert ranking.roc_auc(np.ones(4), positives) == 0.5
    # All tied: one threshold, precision = the positives' share.
    assert ranking.average_precision(np.ones(4), positives) == 0.5


def test_refusals():
    with pytest.raises(ValueError, match="positive and negative rows"):
        ranking.roc_auc(np.arange(3.0), np.array([True, True, True]))
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\)"):
        ranking.average_precision(np.arange(3.0), np.array([True, False]))
    with pytest.raises(ValueError, match="must be finite"):
        ranking.roc_auc(np.array([0.0, np.nan]), np.array([True, False]))
