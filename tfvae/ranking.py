"""Ranking figures of anomaly scores: ROC AUC and average precision, in NumPy.

Both are rank statistics of a score that should be higher for the positive
(anomalous) rows; ties are handled as scikit-learn handles them, which
tfvae does not depend on.

Example:

    roc_auc(nll, labels == 9), average_precision(nll, labels == 9)
"""

import numpy as np


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Returns the area under the ROC curve of `scores` for finding `positives`.

    The probability that a positive row scores above a negative one, ties
    counting half (Mann-Whitney U over average ranks).

    Args:
        scores: `[rows]`, higher meaning more likely positive.
        positives: bool `[rows]`, with at least one True and one False.

    Returns:
        The AUC in [0, 1]; 0.5 is chance.

    Example:
        >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]) > 0)
        0.75
    """
    scores, positives = _ranked(scores, positives)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Tied scores share the mean of the ranks they span (ranks from 1).
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    hits, misses = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - hits * (hits + 1) / 2) / (hits * misses))


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Returns the average precision (the PR curve's area) of `scores`.

    sum_n (R_n - R_{n-1}) P_n over the distinct thresholds, highest first; a
    group of tied scores is one threshold (scikit-learn's definition).

    Args:
        scores: `[rows]`, higher meaning more likely positive.
        positives: bool `[rows]`, with at least one True and one False.

    Returns:
        The average precision in (0, 1]; the positives' share is chance.

    Example:
        >>> average_precision(np.array([0.1, 0.4, 0.35, 0.8]),
        ...                   np.array([0, 0, 1, 1]) > 0)
        0.8333333333333333
    """
    scores, positives = _ranked(scores, positives)
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order]
    # The last row of each group of tied scores closes a threshold.
    ends = np.append(np.flatnonzero(np.diff(scores)), len(scores) - 1)
    hits = np.cumsum(positives)[ends]
    precision = hits / (ends + 1)
    recall = hits / positives.sum()
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _ranked(scores, positives) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    positives = np.asarray(positives, bool)
    if scores.shape != positives.shape or scores.ndim != 1:
        raise ValueError(
            "scores and positives must be [rows] each. Received: shapes "
            f"{scores.shape} and {positives.shape}"
        )
    if positives.all() or not positives.any():
        raise ValueError(
            "Ranking needs positive and negative rows. Received: "
            f"{positives.sum()} positive of {len(positives)}"
        )
    if not np.isfinite(scores).all():
        raise ValueError(f"The scores must be finite. Received: {scores}")
    return scores, positives
