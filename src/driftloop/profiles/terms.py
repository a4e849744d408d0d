"""Vocabulary change a person can read: which terms rose or fell against the reference.

A :class:`TermCounts` counts, for one text column, in how many documents each term of the
reference's vocabulary occurs (exact), and keeps the most frequent *new* terms (not in that
vocabulary) in a Misra-Gries summary of fixed size. Both merge: vocabulary counts add exactly;
Misra-Gries summaries merge with the usual bound (a new term's count is under-estimated by at
most ``documents / (capacity + 1)``), so a day's change is the merge of its windows', with no
text kept. :func:`vocabulary_change` compares two counts: the share of documents with each term
before and after, the terms that rose or fell most, the new terms, and one number, the
Jensen-Shannon distance between the two term distributions.

>>> ref = TermCounts.fit(["the invoice total", "invoice amount due", "lab result normal"])
>>> now = ref.empty().add(["billing statement total payable", "invoice total payable"])
>>> change = vocabulary_change(ref, now, top=3)
>>> [t["term"] for t in change["new"]][:2], change["fell"][0]["term"]
(['payable', 'billing'], 'amount')
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TermCounts", "tokens", "vocabulary_change"]

_TOKEN = re.compile(r"[^\W\d_][\w\-]{1,30}", re.UNICODE)
VOCABULARY = 500  # reference terms counted exactly
CAPACITY = 100  # new terms tracked by the Misra-Gries summary


def tokens(text: Any) -> set[str]:
    """The distinct terms of one document (lower-cased words of 2 to 31 characters)."""
    return set(_TOKEN.findall(str(text).lower())) if text is not None else set()


def _misra_gries(counts: dict[str, int], capacity: int) -> dict[str, int]:
    """Keep at most ``capacity`` terms: subtract the (capacity+1)-th largest count from all."""
    if len(counts) <= capacity:
        return counts
    cut = sorted(counts.values(), reverse=True)[capacity]
    return {t: c - cut for t, c in counts.items() if c - cut > 0}


@dataclass
class TermCounts:
    """Document frequencies of one text column against a fixed vocabulary; merges exactly."""

    vocabulary: list[str]
    documents: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    new: dict[str, int] = field(default_factory=dict)  # Misra-Gries summary of unseen terms
    capacity: int = CAPACITY

    @classmethod
    def fit(cls, texts: Any, size: int = VOCABULARY) -> TermCounts:
        """The reference: its ``size`` most common terms become the vocabulary, then counted."""
        seen: Counter[str] = Counter()
        for text in texts:
            seen.update(tokens(text))
        vocabulary = sorted(t for t, _ in seen.most_common(size))
        return cls(vocabulary, counts=np.zeros(len(vocabulary), dtype=np.int64)).add(texts)

    def empty(self) -> TermCounts:
        return TermCounts(self.vocabulary, counts=np.zeros(len(self.vocabulary), dtype=np.int64))

    def add(self, texts: Any) -> TermCounts:
        """These counts plus the documents ``texts`` (missing texts are skipped)."""
        index = {t: i for i, t in enumerate(self.vocabulary)}
        counts = self.counts.copy() if self.counts.size else np.zeros(len(self.vocabulary), dtype=np.int64)
        new = Counter(self.new)
        documents = self.documents
        for text in texts:
            if text is None or (isinstance(text, float) and text != text):
                continue
            documents += 1
            for term in tokens(text):
                i = index.get(term)
                if i is None:
                    new[term] += 1
                else:
                    counts[i] += 1
        return TermCounts(self.vocabulary, documents, counts, _misra_gries(dict(new), self.capacity))

    def merge(self, other: TermCounts) -> TermCounts:
        new = Counter(self.new)
        new.update(other.new)
        return TermCounts(
            self.vocabulary,
            self.documents + other.documents,
            self.counts + other.counts,
            _misra_gries(dict(new), self.capacity),
        )

    def to_dict(self, include_vocabulary: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"documents": self.documents, "counts": self.counts.tolist(), "new": self.new}
        if include_vocabulary:
            data["vocabulary"] = self.vocabulary
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], vocabulary: list[str] | None = None) -> TermCounts:
        return cls(
            list(vocabulary if vocabulary is not None else data["vocabulary"]),
            int(data["documents"]),
            np.asarray(data["counts"], dtype=np.int64),
            {str(k): int(v) for k, v in data["new"].items()},
        )


def vocabulary_change(reference: TermCounts, current: TermCounts, top: int = 10) -> dict[str, Any]:
    """What changed in the words: ``rose``, ``fell`` and ``new`` terms (each with its share of
    documents in the reference and now) and ``distance``, the Jensen-Shannon distance (0-1)
    between the term distributions, new terms included as one pooled term."""
    n_ref, n_cur = max(reference.documents, 1), max(current.documents, 1)
    ref_share = reference.counts / n_ref
    cur_share = current.counts / n_cur
    delta = cur_share - ref_share

    def row(i: int) -> dict[str, Any]:
        return {
            "term": reference.vocabulary[i],
            "reference": round(float(ref_share[i]), 4),
            "current": round(float(cur_share[i]), 4),
        }

    order = np.argsort(delta, kind="stable")
    rose = [row(int(i)) for i in order[::-1][:top] if delta[i] > 0]
    fell = [row(int(i)) for i in order[:top] if delta[i] < 0]
    new = [
        {"term": t, "reference": 0.0, "current": round(c / n_cur, 4)}
        for t, c in sorted(current.new.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    ]
    p = np.append(reference.counts, sum(reference.new.values())).astype("float64")
    q = np.append(current.counts, sum(current.new.values())).astype("float64")
    distance = 0.0
    if p.sum() > 0 and q.sum() > 0:
        p, q = p / p.sum(), q / q.sum()
        m = (p + q) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_p = np.nansum(np.where(p > 0, p * np.log2(p / m), 0.0))
            kl_q = np.nansum(np.where(q > 0, q * np.log2(q / m), 0.0))
        distance = float(np.sqrt(max((kl_p + kl_q) / 2, 0.0)))
    return {
        "documents": current.documents,
        "distance": round(distance, 4),
        "rose": rose,
        "fell": fell,
        "new": new,
    }
