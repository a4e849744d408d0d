"""Embedding functions for text features: ``[features.body] type = "text", embedding = "..."``.

An embedding function takes a list of strings and returns an array of shape ``(n, d)``; its
``d`` columns are profiled and compared like numeric features (``body.e0`` ... ``body.e{d-1}``)
and feed the multivariate tests. Any ``module:function`` works: a sentence-transformers model
loaded from a local folder, a TF-IDF+SVD fitted on your corpus, an image feature extractor
over paths. Nothing here downloads anything.

:func:`hashing` is the built-in default: character n-grams hashed into a sparse vector, then a
fixed random projection to 16 dimensions. It needs no fitting and no weights, is deterministic
across processes, and moves when vocabulary does (new terms, new languages, new templates).

>>> v = hashing(["the quick brown fox", "the quick brown fox", "ein völlig anderer Text"])
>>> v.shape, bool((v[0] == v[1]).all()), bool((v[0] == v[2]).all())
((3, 16), True, False)
"""

from __future__ import annotations

from functools import cache

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer

__all__ = ["hashing"]

_DIMS = 16
_FEATURES = 2**14


@cache
def _vectorizer() -> HashingVectorizer:
    return HashingVectorizer(
        analyzer="char_wb", ngram_range=(3, 4), n_features=_FEATURES, alternate_sign=False, norm="l2"
    )


@cache
def _projection() -> np.ndarray:
    rng = np.random.default_rng(20261122)
    projection: np.ndarray = rng.standard_normal((_FEATURES, _DIMS)) / np.sqrt(_DIMS)
    return projection


def hashing(texts: list[str]) -> np.ndarray:
    """16-dimensional embeddings of ``texts`` (missing values embed as the empty string)."""
    cleaned = ["" if t is None else str(t) for t in texts]
    sparse = _vectorizer().transform(cleaned)
    return np.asarray(sparse @ _projection(), dtype="float64")
