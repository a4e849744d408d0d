"""Generation: a trainer returns a model whose ``predict`` returns text; a label is a preferred text.

A generator is judged mostly without labels: by its scorers (custom metrics with a function,
see :mod:`driftloop.scorers`), the ratings and tags people give its outputs, and a judge. What
it scores from labels is the overlap of an output with the text a person preferred (a rewrite,
or an output they accepted): ``token_f1`` (bag of words) and ``rouge_l`` (the longest common
subsequence of words, as an F-measure).

Outputs are monitored as their length in words (``__prediction__``, so ``prediction_drift`` is
the drift of output length), the built-in hashing embedding of the text (``output_drift``) and,
against the reference's vocabulary, ``novelty``: the mean share of an output's words the
reference's outputs never used.

>>> import numpy as np
>>> task = Generation()
>>> m = task.metrics(np.array(["deploy with docker today"]), np.array(["deploy with kubernetes today"]))
>>> m["token_f1"], m["rouge_l"]
(0.75, 0.75)
>>> task.label_error("")
"'preferred' must be a non-empty text of at most 20000 characters. Got '' instead."
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from driftloop.config import TASK_METRICS
from driftloop.embeddings import hashing
from driftloop.evaluation import bootstrap_diff, wilcoxon
from driftloop.exceptions import SchemaError, TrainerError
from driftloop.scorers import words
from driftloop.tasks._base import Predictions

if TYPE_CHECKING:
    from collections.abc import Callable

    from driftloop.config import Settings
    from driftloop.profiles import ProfileSpec

__all__ = ["Generation", "rouge_l", "token_f1"]

METRICS: tuple[str, ...] = TASK_METRICS["generation"]
MAX_TEXT = 20_000
VOCABULARY = 5000  # the reference outputs' most common words kept for novelty
EMBEDDING = "__output__"


def token_f1(reference: str, output: str) -> float:
    """F1 of the two texts' word multisets (1.0 when both are empty).

    >>> token_f1("a b c", "a b d")
    0.6666666666666666
    """
    ref, out = Counter(words(reference)), Counter(words(output))
    if not ref and not out:
        return 1.0
    common = sum((ref & out).values())
    return 2 * common / (sum(ref.values()) + sum(out.values()))


def rouge_l(reference: str, output: str) -> float:
    """ROUGE-L F-measure: the longest common subsequence of words over both lengths.

    >>> rouge_l("the cat sat on the mat", "the cat lay on the mat")
    0.8333333333333334
    """
    a, b = words(reference), words(output)
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    return 2 * lcs / (len(a) + len(b))


_SCORES = {"token_f1": token_f1, "rouge_l": rouge_l}  # each row's, averaged by metrics


def _texts(values: Any) -> list[str]:
    return [
        "" if v is None or (isinstance(v, float) and v != v) else str(v)
        for v in np.asarray(values, dtype=object)
    ]


class Generation:
    """A model of text: prompt (and any features) in, text out."""

    name = "generation"
    primary_metric = "token_f1"
    metric_names = METRICS
    lower_is_better: frozenset[str] = frozenset()
    slice_metric = "token_f1"
    paired_test = "Wilcoxon"
    classes: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Generation:
        return cls()

    def check_model(self, model: Any, entrypoint: str) -> None:
        if not hasattr(model, "predict"):
            raise TrainerError(
                f"The trainer {entrypoint!r} must return a fitted generator with 'predict' (a frame of "
                f"inputs in, one text per row out). Got a {type(model).__name__} without it."
            )

    def predict(self, model: Any, X: pd.DataFrame) -> Predictions:
        texts = list(model.predict(X))
        if len(texts) != len(X) or not all(isinstance(t, str) for t in texts):
            kinds = sorted({type(t).__name__ for t in texts})
            raise TrainerError(
                f"A generator's predict must return one str per row ({len(X)}). "
                f"Got {len(texts)} values of types {kinds} instead."
            )
        return Predictions(np.asarray(texts, dtype=object), np.full(len(X), np.nan))

    def targets(self, values: pd.Series, what: str) -> pd.Series:
        bad = [v for v in values.tolist() if self.label_error(v) is not None]
        if bad:
            raise SchemaError(
                f"Every target text in the {what} must be a non-empty text of at most {MAX_TEXT} "
                f"characters. Got {[str(v)[:40] for v in bad[:3]]} instead."
            )
        return values.astype(str).astype(object)

    def label_error(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
            return (
                f"'preferred' must be a non-empty text of at most {MAX_TEXT} characters. "
                f"Got {value!r:.80} instead."
            )
        return None

    def parse_label(self, value: Any) -> str:
        return str(value)

    def metrics(self, y_true: Any, y_pred: Any, probabilities: Any = None) -> dict[str, float]:
        truth, made = _texts(y_true), _texts(y_pred)
        if not truth:
            return dict.fromkeys(METRICS, float("nan"))
        pairs = list(zip(truth, made, strict=True))
        return {name: float(np.mean([f(t, p) for t, p in pairs])) for name, f in _SCORES.items()}

    def subset_metrics(
        self, y_true: Any, y_pred: Any, probabilities: Any = None
    ) -> Callable[[np.ndarray], dict[str, float]]:
        """Each row's overlaps once (ROUGE-L is quadratic in a text's words); a subset averages them."""
        pairs = list(zip(_texts(y_true), _texts(y_pred), strict=True))
        scores = {name: np.array([f(t, p) for t, p in pairs], dtype="float64") for name, f in _SCORES.items()}
        return lambda rows: {
            name: float(values[rows].mean()) if len(rows) else float("nan") for name, values in scores.items()
        }

    def row_scores(self, y_true: Any, y_pred: Any) -> np.ndarray:
        pairs = zip(_texts(y_true), _texts(y_pred), strict=True)
        return np.array([token_f1(t, p) for t, p in pairs], dtype="float64")

    def paired(
        self,
        y_true: Any,
        pred_a: Any,
        pred_b: Any,
        metric: str,
        probabilities_a: Any = None,
        probabilities_b: Any = None,
    ) -> tuple[float | None, tuple[float, float] | None]:
        y = np.asarray(_texts(y_true), dtype=object)
        if not len(y):
            return None, None
        a, b = np.asarray(_texts(pred_a), dtype=object), np.asarray(_texts(pred_b), dtype=object)
        score = rouge_l if metric == "rouge_l" else token_f1
        sa = np.array([score(t, p) for t, p in zip(y, a, strict=True)])
        sb = np.array([score(t, p) for t, p in zip(y, b, strict=True)])
        n, stacked = len(y), np.concatenate([sa, sb])
        rows = np.arange(n)
        return wilcoxon(1 - sa, 1 - sb), bootstrap_diff(
            rows, rows, rows + n, lambda _, q: float(stacked[q].mean())
        )

    def corrected(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """A preferred text corrects the output when it is not the output itself."""
        pairs = zip(_texts(y_true), _texts(y_pred), strict=True)
        return np.array([words(t) != words(p) for t, p in pairs], dtype=bool)

    def strata(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """``rewritten`` or ``accepted``."""
        return np.where(self.corrected(y_true, y_pred), "rewritten", "accepted").astype(object)

    def output_frame(self, labels: Any, confidence: Any, probabilities: Any = None) -> pd.DataFrame:
        """The output's length in words (``__prediction__``), its text (``__text__``, given to
        scorers as ``prediction``; not profiled) and its hashing embedding ``__output__.e<i>``."""
        texts = _texts(labels)
        embedded = hashing(texts) if texts else np.zeros((0, 16))
        columns: dict[str, Any] = {
            "__prediction__": np.array([len(words(t)) for t in texts], dtype="float64"),
            "__text__": np.asarray(texts, dtype=object),
        }
        columns |= {f"{EMBEDDING}.e{i}": embedded[:, i] for i in range(embedded.shape[1])}
        return pd.DataFrame(columns)

    def output_spec(self, outputs: pd.DataFrame, bins: int) -> ProfileSpec:
        from driftloop.profiles import ProfileSpec

        numeric = [c for c in outputs if c == "__prediction__" or c.startswith(f"{EMBEDDING}.")]
        return ProfileSpec(
            numeric=ProfileSpec.fit(outputs, numeric, [], bins=bins).numeric, categorical={}, sample_size=0
        )

    def fit_estimator(self, features: pd.DataFrame, outputs: pd.DataFrame, y_true: Any) -> dict[str, Any]:
        """The reference outputs' most common words, for :meth:`estimates`' ``novelty``."""
        counts = Counter(w for t in outputs["__text__"].tolist() for w in set(words(t)))
        return {"vocabulary": sorted(w for w, _ in counts.most_common(VOCABULARY))}

    def estimates(
        self, estimator: dict[str, Any], features: pd.DataFrame, outputs: pd.DataFrame
    ) -> dict[str, float | None]:
        known = set(estimator.get("vocabulary", []))
        shares = [
            sum(w not in known for w in tokens) / len(tokens)
            for tokens in (words(t) for t in outputs["__text__"].tolist())
            if tokens
        ]
        return {"novelty": float(np.mean(shares)) if shares and known else None}

    def label_drift(self, estimator: dict[str, Any], y_true: Any, y_pred: Any) -> dict[str, dict[str, Any]]:
        return {}
