"""The ``blog`` template: a post generator whose topics' vocabulary moves on.

Six topics (web apps, Python, data pipelines, deployment, machine learning, testing) each have
the tools of an older era (concept A: jQuery, Hadoop, Heroku, ...) and of today (concept B:
htmx, DuckDB, Kubernetes, ...). A prompt asks for a post on a topic with one tool; the post
talks about that tool and another of the same era. A generator trained on A answers a B
prompt with A's tools: its freshness (how recent the dated terms are) and relevance (how much of
the prompt it covers) fall; retrained on B's prompts and their rewrites they recover.

:class:`NgramGenerator` is a real, small generator: it finds the training prompts nearest a new
prompt (TF-IDF, cosine) and writes with a word trigram model of their posts, weighted by
similarity, greedily and deterministically. It learns in well under a second on a laptop.

>>> df = posts(4, "B", seed=1)
>>> sorted(df.columns)
['audience', 'post', 'prompt']
>>> train = posts(300, "A", seed=2)
>>> model = NgramGenerator().fit(train.drop(columns="post"), train["post"])
>>> text = model.predict(df.drop(columns="post"))[0]
>>> isinstance(text, str) and len(text.split()) > 10
True
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CONFIG",
    "FILES",
    "SCORERS",
    "TERMS",
    "TRAINER",
    "NgramGenerator",
    "WordSalad",
    "posts",
    "terms_csv",
]

TOPICS: dict[str, dict[str, Any]] = {
    "web": {
        "phrase": "building web apps",
        "A": ["jQuery", "AngularJS", "Bootstrap"],
        "B": ["htmx", "Svelte", "Tailwind"],
    },
    "python": {
        "phrase": "packaging Python code",
        "A": ["virtualenv", "setup.py", "easy_install"],
        "B": ["uv", "pyproject.toml", "Hatch"],
    },
    "data": {
        "phrase": "data pipelines",
        "A": ["Hadoop", "Pig", "Hive"],
        "B": ["DuckDB", "Polars", "Iceberg"],
    },
    "deploy": {
        "phrase": "deploying services",
        "A": ["Heroku", "Vagrant", "Chef"],
        "B": ["Kubernetes", "OpenTofu", "Fly.io"],
    },
    "ml": {
        "phrase": "training models",
        "A": ["Theano", "Caffe", "word2vec"],
        "B": ["PyTorch", "JAX", "LoRA"],
    },
    "testing": {
        "phrase": "testing code",
        "A": ["nose", "Travis", "Selenium"],
        "B": ["pytest", "Playwright", "Hypothesis"],
    },
}
# when each term became current: the freshness scorer's term list
_DATES = {"A": ("2024-01-15", "2024-03-01", "2024-06-01"), "B": ("2026-06-01", "2026-08-15", "2026-10-01")}
_OPENERS = [
    "In this post we look at {phrase} with {t1} and {t2}.",
    "Here is a practical guide to {phrase} with {t1}.",
]
_SENTENCES = [
    "Start by installing {t1}, then configure it for your project.",
    "Most teams pair {t1} with {t2} to keep the work maintainable.",
    "The main advantage of {t1} is that it keeps {phrase} fast and predictable.",
    "A small example with {t1} shows the idea in a few lines.",
    "When the project grows, {t2} helps you keep {phrase} under control.",
    "Write down what you expect before you change how {t1} is set up.",
]
_CLOSERS = [
    "In short, {t1} is a solid choice for {phrase} today.",
    "Try {t1} on your next project and compare.",
]
_STYLE = {"beginner": "a beginner-friendly", "expert": "an in-depth"}


def posts(n: int, concept: str = "A", seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """``n`` prompts of concept ``"A"`` or ``"B"`` (with ``audience``) and the post each asks for."""
    if concept not in ("A", "B"):
        raise ValueError(f"The 'concept' parameter of posts must be 'A' or 'B'. Got {concept!r} instead.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    names = list(TOPICS)
    prompts, texts, audiences = [], [], []
    for _ in range(n):
        topic = TOPICS[names[int(rng.integers(len(names)))]]
        era = concept if rng.random() < 0.95 else ("A" if concept == "B" else "B")
        t1, t2 = (str(t) for t in rng.choice(topic[era], 2, replace=False))
        audience = "beginner" if rng.random() < 0.5 else "expert"
        slots = {"phrase": topic["phrase"], "t1": t1, "t2": t2}
        prompts.append(f"Write {_STYLE[audience]} post about {topic['phrase']} with {t1}.")
        body = [str(rng.choice(_OPENERS))]
        body += [str(s) for s in rng.choice(_SENTENCES, int(rng.integers(2, 4)), replace=False)]
        body.append(str(rng.choice(_CLOSERS)))
        texts.append(" ".join(s.format(**slots) for s in body))
        audiences.append(audience)
    return pd.DataFrame({"prompt": prompts, "audience": audiences, "post": texts})


def terms_csv(eras: tuple[str, ...] = ("A",)) -> str:
    """The freshness scorer's term list: every tool of ``eras`` with the date it became current.
    The template starts with A's tools; when the topics move on, the owner adds B's."""
    rows = ["term,date"]
    for topic in TOPICS.values():
        for era in eras:
            rows += [f"{term},{date}" for term, date in zip(topic[era], _DATES[era], strict=True)]
    return "\n".join(rows) + "\n"


TERMS = terms_csv()
_TOKEN = re.compile(r"[\w.+#-]+[\w+#]|[\w]|[.,!?]")


class NgramGenerator:
    """Nearest training prompts (TF-IDF) -> a similarity-weighted word trigram model of their
    texts -> the likeliest continuation, greedily, without repeating a trigram.

    ``fit(X, y, sample_weight=None, negatives=None)`` takes the inputs (the ``prompt`` column
    and any others, whose values join the prompt as words) and the target texts; ``negatives``
    (outputs people tagged bad, a frame with their inputs and a ``text`` column, or the target's
    column) make their word trigrams a quarter as likely. ``predict(X)`` returns one text per row.
    """

    def __init__(self, neighbours: int = 12, max_words: int = 120, prompt: str = "prompt") -> None:
        self.neighbours = neighbours
        self.max_words = max_words
        self.prompt = prompt

    def _queries(self, X: pd.DataFrame) -> list[str]:
        others = [c for c in X.columns if c != self.prompt]
        return [
            " ".join([str(row[self.prompt]), *(f"{c}_{row[c]}" for c in others)])
            for row in X.to_dict(orient="records")
        ]

    def fit(
        self, X: pd.DataFrame, y: Any, sample_weight: Any = None, negatives: pd.DataFrame | None = None
    ) -> NgramGenerator:
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = [str(t) for t in y]
        if not texts:
            raise ValueError("NgramGenerator.fit needs at least one training text. Got none.")
        self.vectorizer_ = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self.index_ = self.vectorizer_.fit_transform(self._queries(X))
        self.tokens_ = [["<s>", "<s>", *_TOKEN.findall(t), "</s>"] for t in texts]
        self.weights_ = np.ones(len(texts)) if sample_weight is None else np.asarray(sample_weight, "float64")
        self.avoid_: set[tuple[str, str, str]] = set()
        if negatives is not None and len(negatives):
            column = "text" if "text" in negatives else negatives.columns[-1]
            for text in negatives[column].astype(str):
                tokens = ["<s>", "<s>", *_TOKEN.findall(text), "</s>"]
                self.avoid_.update(zip(tokens, tokens[1:], tokens[2:], strict=False))
        return self

    def predict(self, X: pd.DataFrame) -> list[str]:
        sims = (self.vectorizer_.transform(self._queries(X)) @ self.index_.T).toarray()
        return [self._write(row) for row in sims]

    def _write(self, sims: np.ndarray) -> str:
        k = min(self.neighbours, len(sims))
        nearest = np.argsort(-sims, kind="stable")[:k]
        table: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for i in nearest:
            weight = (float(sims[i]) + 1e-6) * float(self.weights_[i])
            tokens = self.tokens_[i]
            for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False):
                table[(a, b)][c] += weight * (0.25 if (a, b, c) in self.avoid_ else 1.0)
        out, seen = ["<s>", "<s>"], set()
        while len(out) < self.max_words + 2:
            options = table.get((out[-2], out[-1]))
            if not options:
                break
            ranked = sorted(options.items(), key=lambda kv: (-kv[1], kv[0]))
            nxt = next((t for t, _ in ranked if (out[-2], out[-1], t) not in seen), None)
            if nxt is None or nxt == "</s>":
                break
            seen.add((out[-2], out[-1], nxt))
            out.append(nxt)
        return re.sub(r" ([.,!?])", r"\1", " ".join(out[2:]))


class WordSalad:
    """A careless "generator": every trending term it was trained on, in a row. Fresh, on topic,
    and unreadable; the gate must reject it for coherence."""

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> WordSalad:
        counts: dict[str, int] = defaultdict(int)
        for text in y:
            for term in {t for topic in TOPICS.values() for t in topic["B"]} & set(_TOKEN.findall(str(text))):
                counts[term] += 1
        self.terms_ = sorted(counts, key=lambda t: (-counts[t], t))[:12] or ["htmx"]
        return self

    def predict(self, X: pd.DataFrame) -> list[str]:
        return [" ".join(self.terms_ * 3) for _ in range(len(X))]


CONFIG = """\
# driftloop project: a blog-post generator judged by its scorers. See docs/config.md.
[project]
name = "blog"
task = "generation"
target = "post"

[data]
train = "data/train.csv"

[trainer]
entrypoint = "trainer:train"

[features.prompt]
type = "text"
max_length = 2000

[features.audience]
type = "categorical"
allowed = ["beginner", "expert"]

[serving]
host = "127.0.0.1"
port = {port}
reload_interval = "{reload_interval}"

[monitor]
window = "{window}"
schedule = "30s"

# scorers: per-output functions, run by the monitor off the response path
[metrics.freshness]
function = "driftloop.scorers:freshness"
params = {{ terms = "terms.csv", half_life = "365d" }}

[metrics.relevance]
function = "driftloop.scorers:relevance"
params = {{ prompt = "prompt" }}

[metrics.coherence]
function = "scorers:coherence"

[metrics.repetition]
function = "driftloop.scorers:repetition"
better = "lower"

[metrics.sentiment]   # a categorical scorer: each label's share per window, and its drift
function = "scorers:sentiment"
kind = "categorical"
categories = ["positive", "neutral", "negative"]

[generation]
tags = ["dated", "off-topic", "awkward"]
bad_tags = ["dated", "off-topic", "awkward"]
accept_rating = 4
negatives = "trainer"   # bad-tagged outputs reach the trainer as negatives (trainer.py takes them)

[[alerts]]
name = "stale-posts"
metric = "metric.freshness"
op = "<"
threshold = 0.7
for = 1
repeat_after = 2   # again after two more stale windows, if the retrain it queued was rejected
retrain = true

[[alerts]]
name = "dated-tags"
metric = "tag.dated"
op = ">"
threshold = 0.3

[retrain]
lookback = 20000
replay_fraction = {replay_fraction}
holdout_fraction = 0.3
min_train_rows = 50

[gate]
primary_metric = "metric.freshness"
min_improvement = 0.05
max_regression = {{ "metric.coherence" = 0.05, "metric.relevance" = 0.05 }}
min_eval_rows = 40
judge = "scorers:judge"
judge_min_win_rate = 0.5
"""

SCORERS = '''\
"""The project's own scorers and judge: driftloop calls them off the response path."""

from pathlib import Path

import numpy as np

from driftloop.scorers import words

TERMS = str(Path(__file__).with_name("terms.csv"))

FUNCTION_WORDS = {"the", "a", "an", "to", "with", "and", "is", "it", "of", "for", "in", "on", "your", "you"}


def coherence(inputs, outputs):
    """A small stand-in for a coherence model: the share of an output's sentences that read as
    sentences (4 to 40 words, with function words among them)."""
    scores = []
    for text in outputs["prediction"]:
        sentences = [s for s in str(text).split(".") if s.strip()]
        good = [s for s in sentences if 4 <= len(words(s)) <= 40 and FUNCTION_WORDS & set(words(s))]
        scores.append(len(good) / len(sentences) if sentences else 0.0)
    return np.array(scores)


POSITIVE = {"advantage", "solid", "simpler", "fast", "predictable", "maintainable", "helps"}
NEGATIVE = {"slow", "broken", "painful", "deprecated", "fragile"}


def sentiment(inputs, outputs):
    """A small stand-in for a sentiment model: positive, neutral or negative by a word list."""
    labels = []
    for text in outputs["prediction"]:
        found = set(words(text))
        score = len(found & POSITIVE) - len(found & NEGATIVE)
        labels.append("positive" if score > 1 else "negative" if score < 0 else "neutral")
    return labels


def judge(inputs, first, second):
    """A pairwise judge (a hosted LLM in production): prefers the output that is fresher and
    more coherent, with a rationale."""
    import pandas as pd

    from driftloop.scorers import freshness

    def score(texts):
        frame = pd.DataFrame({"prediction": texts})
        fresh = np.nan_to_num(freshness(inputs, frame, terms=TERMS, half_life="365d"))
        return fresh + coherence(inputs, frame)

    a, b = score(first), score(second)
    verdicts = []
    for x, y in zip(a, b):
        if abs(x - y) < 0.05:
            verdicts.append({"preferred": "tie", "rationale": "equally fresh and readable"})
        else:
            better = "first" if x > y else "second"
            why = f"fresher and more coherent ({max(x, y):.2f} vs {min(x, y):.2f})"
            verdicts.append({"preferred": better, "rationale": why})
    return verdicts
'''

TRAINER = '''\
"""The project's trainer: driftloop calls train(X, y, **params) and registers what it returns."""

from driftloop.demo.blog import NgramGenerator, WordSalad


def train(X, y, sample_weight=None, negatives=None, neighbours=12):
    return NgramGenerator(neighbours=neighbours).fit(X, y, sample_weight=sample_weight, negatives=negatives)


def careless(X, y, **params):
    """A deliberately bad candidate: fresh terms, no sentences. The gate must reject it."""
    return WordSalad().fit(X, y)
'''

FILES = {"scorers.py": SCORERS, "terms.csv": TERMS}  # written beside trainer.py
