"""Floors: a logistic regression on simple statistics of the same stored features, per modality.

A neural row below its floor is an artefact to explain (an optimiser set for another regime, features
that carry nothing), not a result. The probes read the store video by video (bounded memory) and train on
the train split only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from instrec_pipeline.training.data import SplitData, iter_rows


def _stats(rows: np.ndarray) -> np.ndarray:
    """A video as one vector: mean and standard deviation of its rows (log-mel bands or embeddings)."""
    x = np.asarray(rows, np.float64)
    return np.concatenate([x.mean(0), x.std(0)])


def _table(modality: Mapping[str, np.ndarray], ids: list[str]) -> tuple[list[str], np.ndarray]:
    got = [(v, _stats(x)) for v, x in iter_rows(modality, ids)]
    return [v for v, _ in got], np.stack([f for _, f in got]) if got else np.zeros((0, 0))


def linear_probe(
    train: SplitData, test: SplitData, pick: Callable[[SplitData], Mapping[str, np.ndarray]], n_classes: int
) -> np.ndarray:
    """Test-split class probabilities of a logistic regression fitted on the train split's statistics;
    videos without the modality get the uniform prior, as the neural rows do."""
    ids, x = _table(pick(train), train.video_ids)
    probs = np.full((len(test.video_ids), n_classes), 1.0 / n_classes)
    y = train.labels_for(ids)
    if len(ids) < 2 or len(np.unique(y)) < 2:
        return probs
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    model.fit(x, y)
    test_ids, xt = _table(pick(test), test.video_ids)
    if test_ids:
        pos = {v: i for i, v in enumerate(test.video_ids)}
        rows = [pos[v] for v in test_ids]
        probs[rows] = 0.0
        probs[np.ix_(rows, model.classes_)] = model.predict_proba(xt)
    return probs
