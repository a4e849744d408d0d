"""Built-in scorers: cheap, dependency-free per-output scores for generated text.

A scorer is a custom metric with a function (``[metrics.<name>] function = "module:function"``)
called as ``function(inputs, outputs, **params)`` on a window's frames, off the response path;
``outputs["prediction"]`` holds the generated text. These are ready to name in config:

=======================================  ==================================================
``driftloop.scorers:length``             words in the output
``driftloop.scorers:repetition``         share of the output's word trigrams that repeat one
                                         seen earlier in it (0 = none repeat)
``driftloop.scorers:freshness``          how recent the dated terms it mentions are:
                                         the mean of ``0.5 ** (age / half_life)`` over the
                                         terms of ``terms`` (a CSV of ``term,date``) found in
                                         it, age counted to the newest date in the file;
                                         NaN when it mentions none
``driftloop.scorers:relevance``          share of the prompt's content words (``prompt``
                                         names the input column) that the output uses
=======================================  ==================================================

Vocabulary novelty against the reference is a window metric of the generation task
(``novelty``), since it needs the reference's vocabulary.

>>> import pandas as pd
>>> inputs = pd.DataFrame({"prompt": ["a post about fastapi testing"]})
>>> outputs = pd.DataFrame({"prediction": ["Testing with FastAPI is fast. Testing with FastAPI is fast."]})
>>> length(inputs, outputs).tolist(), repetition(inputs, outputs).tolist()
([10], [0.375])
>>> relevance(inputs, outputs, prompt="prompt").tolist()
[1.0]
"""

from __future__ import annotations

import csv
import math
import re
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from driftloop.config import parse_duration
from driftloop.exceptions import ConfigError

__all__ = ["STOPWORDS", "freshness", "length", "relevance", "repetition", "words"]

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9+#.'-]*[A-Za-z0-9+#]|[A-Za-z0-9]")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "post",
        "short",
        "that",
        "the",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "which",
        "who",
        "why",
        "will",
        "with",
        "write",
        "you",
        "your",
        "about",
    ]
)


def words(text: object) -> list[str]:
    """The lower-cased words of a text (``None`` has none).

    >>> words("Deploy to K8s, with Python 3.13!")
    ['deploy', 'to', 'k8s', 'with', 'python', '3.13']
    """
    return [w.lower() for w in _WORD.findall("" if text is None else str(text))]


def _texts(outputs: pd.DataFrame) -> list[object]:
    return list(outputs["prediction"].tolist())


def length(inputs: pd.DataFrame, outputs: pd.DataFrame) -> np.ndarray:
    """Words in each output."""
    return np.array([len(words(t)) for t in _texts(outputs)], dtype="int64")


def repetition(inputs: pd.DataFrame, outputs: pd.DataFrame) -> np.ndarray:
    """Share of each output's word trigrams that repeat an earlier one (0 for under four words)."""
    out = []
    for text in _texts(outputs):
        tokens = words(text)
        grams = list(zip(tokens, tokens[1:], tokens[2:], strict=False))
        out.append(1.0 - len(set(grams)) / len(grams) if grams else 0.0)
    return np.array(out, dtype="float64")


@cache
def _read_terms(path: str, version: tuple[int, int]) -> dict[tuple[str, ...], date]:
    found: dict[tuple[str, ...], date] = {}
    with Path(path).open(encoding="utf-8", newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            term, when = (row.get("term") or "").strip(), (row.get("date") or "").strip()
            try:
                found[tuple(words(term))] = date.fromisoformat(when)
            except ValueError:
                raise ConfigError(
                    f"Row {i + 2} of the terms file '{path}' must have a term and an ISO date "
                    f"(columns term,date). Got {term!r}, {when!r} instead."
                ) from None
    return found


def _terms(path: Path) -> dict[tuple[str, ...], date]:
    """The term list, read again whenever the file changes (trends are updated in place)."""
    if not path.is_file():
        raise ConfigError(f"The freshness scorer's 'terms' file '{path}' must exist (a CSV of term,date).")
    stat = path.stat()
    return _read_terms(str(path), (stat.st_mtime_ns, stat.st_size))


def freshness(
    inputs: pd.DataFrame,
    outputs: pd.DataFrame,
    *,
    terms: str,
    half_life: str = "365d",
    as_of: str | None = None,
    root: Path | None = None,
) -> np.ndarray:
    """How recent the dated terms each output mentions are, against current trends: the mean
    over the terms of the file ``terms`` it contains of ``0.5 ** (age / half_life)``, where age
    is ``as_of`` minus the term's date (a term dated later counts as age 0). ``as_of`` defaults
    to the newest date in the file, so a term is judged against the newest trend the list
    knows and keeping the list current is all it takes. NaN for an output with no dated term,
    so a window's mean is over the outputs it can judge. A relative ``terms`` path is read from
    the project folder (``root``, which driftloop passes)."""
    table = _terms(root / terms if root is not None else Path(terms))
    now = date.fromisoformat(as_of) if as_of else max(table.values(), default=datetime.now(UTC).date())
    days = parse_duration(half_life) / 86400.0
    longest = max((len(t) for t in table), default=1)
    out = []
    for text in _texts(outputs):
        tokens = words(text)
        ages = [
            max(0, (now - table[gram]).days)
            for n in range(1, longest + 1)
            for gram in {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
            if gram in table
        ]
        out.append(float(np.mean([0.5 ** (a / days) for a in ages])) if ages else math.nan)
    return np.array(out, dtype="float64")


def relevance(inputs: pd.DataFrame, outputs: pd.DataFrame, *, prompt: str = "prompt") -> np.ndarray:
    """Share of the prompt's content words (not stop words, three letters or more) that the
    output uses; NaN when the prompt has none."""
    if prompt not in inputs:
        raise ConfigError(
            f"The relevance scorer's 'prompt' parameter must name an input column. Got {prompt!r}; "
            f"the inputs are {list(inputs.columns)}."
        )
    out = []
    for asked, text in zip(inputs[prompt].tolist(), _texts(outputs), strict=True):
        wanted = {w for w in words(asked) if w not in STOPWORDS and len(w) >= 3}
        used = set(words(text))
        out.append(len(wanted & used) / len(wanted) if wanted else math.nan)
    return np.array(out, dtype="float64")
