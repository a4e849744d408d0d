"""The ``forms`` template: entity extraction from intake documents whose layouts change.

Referrals, lab reports and invoices arrive with a patient's name, date of birth, the provider,
a reference number and (invoices) an amount. In layout A (the paper forms) the date of birth
follows ``DOB:`` as ``12/03/1990`` and the provider sits near the top. In layout B (a new portal)
it reads ``Date of birth – 12 March 1990``, the provider block moves to the foot ("on behalf
of ..."), and invoices say "Total payable". A tagger trained on A still finds names and
reference numbers (both unchanged), and misses dates of birth, providers and amounts: per-field
F1 falls for some fields and not others.

:class:`TokenTagger` is a real extractor: it tags tokens B/I/O per field (a logistic
regression over hashed features of each token and its neighbours), learning from documents and
their field values, and returns each field's best span with the mean probability of its tags as
its confidence. It learns from a thousand documents in a few seconds on a laptop.

>>> df = forms(3, "A", seed=1)
>>> sorted(df.columns)
['channel', 'doc_type', 'fields', 'text']
>>> train = forms(400, "A", seed=2)
>>> tagger = TokenTagger().fit(train[["text"]], train["fields"])
>>> found = tagger.predict(df[["text"]])[0]
>>> sorted(found), 0.0 <= found["dob"]["confidence"] <= 1.0
(['amount', 'dob', 'patient_name', 'provider', 'reference'], True)
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CLASSIFIER",
    "CLASSIFIER_TRAINER",
    "CONFIG",
    "FIELDS",
    "TRAINER",
    "TokenTagger",
    "forms",
    "tokens",
]

FIELDS = {
    "patient_name": "text",
    "dob": "date",
    "provider": "text",
    "reference": "identifier",
    "amount": "amount",
}
_FIRST = [
    "Ana",
    "Ben",
    "Chen",
    "Dana",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivo",
    "Jun",
    "Kai",
    "Lea",
    "Mia",
    "Noor",
]
_LAST = [
    "Ruiz",
    "Okafor",
    "Wei",
    "Novak",
    "Haddad",
    "Lund",
    "Patel",
    "Sato",
    "Berg",
    "Costa",
    "Moreau",
    "Ito",
]
_PROVIDERS = [
    "Dr Amir Khan",
    "Dr Sofia Lindqvist",
    "Dr Tomas Ortega",
    "Northside Clinic",
    "St Mary Medical Centre",
    "Dr Grace Obi",
    "Lakeview Practice",
]
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_TOKEN = re.compile(r"\w+(?:[.'/-]\w+)*|[^\w\s]")


def tokens(text: str) -> list[tuple[str, int, int]]:
    """Tokens with their character offsets.

    >>> tokens("DOB: 12/03/1990")
    [('DOB', 0, 3), (':', 3, 4), ('12/03/1990', 5, 15)]
    """
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def forms(n: int, layout: str = "A", seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """``n`` documents of layout ``"A"`` or ``"B"``: their ``text``, ``channel``, kind
    (``doc_type``, what the template's document classifier learns) and the true ``fields``
    (JSON; a field a document lacks is null)."""
    if layout not in ("A", "B"):
        raise ValueError(f"The 'layout' parameter of forms must be 'A' or 'B'. Got {layout!r} instead.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    texts, fields, channels, kinds = [], [], [], []
    for _ in range(n):
        kind = str(rng.choice(["referral", "lab_report", "invoice"], p=[0.35, 0.35, 0.3]))
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        y, m, d = int(rng.integers(1940, 2010)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        provider = str(rng.choice(_PROVIDERS))
        reference = (
            f"{rng.choice(list('ABCDEFGHKLMN'))}{int(rng.integers(10, 99))}-{int(rng.integers(1000, 9999))}"
        )
        amount = f"{rng.uniform(20, 3000):.2f}" if kind == "invoice" else None
        seen = f"2026-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
        dob = f"{d:02d}/{m:02d}/{y}" if layout == "A" else f"{d} {_MONTHS[m - 1]} {y}"
        text = _write(kind, layout, name, dob, provider, reference, amount, seen, rng)
        texts.append(text)
        kinds.append(kind)
        fields.append(
            json.dumps(
                {
                    "patient_name": name,
                    "dob": dob,
                    "provider": provider,
                    "reference": reference,
                    "amount": amount,
                },
                sort_keys=True,
            )
        )
        channels.append(
            "portal" if layout == "B" and rng.random() < 0.8 else str(rng.choice(["fax", "email", "post"]))
        )
    return pd.DataFrame({"text": texts, "channel": channels, "doc_type": kinds, "fields": fields})


def _write(
    kind: str,
    layout: str,
    name: str,
    dob: str,
    provider: str,
    reference: str,
    amount: str | None,
    seen: str,
    rng: np.random.Generator,
) -> str:
    born = f"DOB: {dob}" if layout == "A" else f"Date of birth – {dob}"
    filler = {
        "referral": [
            "Reason for referral: persistent symptoms since {seen}.",
            "Please assess at your earliest convenience.",
            "Relevant history attached.",
        ],
        "lab_report": [
            "Specimen collected {seen}.",
            "Haemoglobin 13.2 g/dL, within range.",
            "Results validated by the laboratory.",
        ],
        "invoice": ["Issued {seen}.", "Payment within 30 days.", "Quote the reference with your payment."],
    }[kind]
    body = [s.format(seen=seen) for s in rng.choice(filler, 2, replace=False)]
    title = {"referral": "REFERRAL", "lab_report": "LAB REPORT", "invoice": "INVOICE"}[kind]
    if layout == "A":
        lines = [
            title,
            f"Referring provider: {provider}" if kind == "referral" else f"Provider: {provider}",
            f"Patient: {name}",
            born,
            f"Ref: {reference}",
        ]
        if amount is not None:
            lines.append(f"Amount due: EUR {amount}")
        return "\n".join(lines + body)
    lines = [f"{title} (portal)", f"Patient: {name}", born, f"Ref: {reference}"]
    if amount is not None:
        lines.append(f"Total payable {amount} EUR")
    lines += [*body, f"Submitted on behalf of {provider} via the patient portal."]
    return "\n".join(lines)


def _shape(word: str) -> str:
    shape = re.sub(r"[A-Z]", "X", re.sub(r"[a-z]", "x", re.sub(r"\d", "d", word)))
    return re.sub(r"(.)\1+", r"\1\1", shape)


def _features(toks: list[str], i: int) -> list[str]:
    w = toks[i]
    out = [f"w={w.lower()}", f"shape={_shape(w)}", f"p3={w[:3].lower()}", f"s3={w[-3:].lower()}", "bias"]
    for k in (-3, -2, -1, 1, 2):
        j = i + k
        other = toks[j].lower() if 0 <= j < len(toks) else ("<s>" if j < 0 else "</s>")
        out += [f"{k}={other}", f"{k}shape={_shape(toks[j]) if 0 <= j < len(toks) else other}"]
    out.append(f"-2-1={toks[i - 2].lower() if i >= 2 else '<s>'}_{toks[i - 1].lower() if i >= 1 else '<s>'}")
    return out


def _span(text: str, value: str, spans: list[tuple[str, int, int]]) -> tuple[int, int] | None:
    """The token indices ``[a, b)`` that a value occupies in a document (its first place)."""
    start = text.find(value)
    if start < 0 or not value:
        return None
    end = start + len(value)
    inside = [k for k, (_, s, e) in enumerate(spans) if s >= start and e <= end]
    return (inside[0], inside[-1] + 1) if inside else None


class TokenTagger:
    """A B/I/O token tagger per field: logistic regression (SGD) over hashed features of each
    token and its neighbours. ``fit(X, y, sample_weight=None)`` takes the ``text`` column and each
    document's fields (JSON or dicts); ``predict(X)`` returns, per document, each field's best
    span as ``{"value", "confidence"}`` (``value`` None when no token is tagged for it, the
    confidence then the chance that it is absent)."""

    def __init__(self, text: str = "text", epochs: int = 8, seed: int = 0) -> None:
        self.text = text
        self.epochs = epochs
        self.seed = seed

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> TokenTagger:
        from sklearn.feature_extraction import FeatureHasher
        from sklearn.linear_model import SGDClassifier

        rows, tags, weights, names = [], [], [], set()
        given = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype="float64")
        for text, fields, w in zip(X[self.text].astype(str), y, given, strict=True):
            values = fields if isinstance(fields, dict) else json.loads(str(fields))
            names |= set(values)
            spans = tokens(text)
            labels = ["O"] * len(spans)
            for field, value in values.items():
                where = _span(text, value, spans) if value else None
                if where is not None:
                    labels[where[0] : where[1]] = [f"B-{field}"] + [f"I-{field}"] * (where[1] - where[0] - 1)
            words = [t for t, _, _ in spans]
            rows += [_features(words, i) for i in range(len(words))]
            tags += labels
            weights += [float(w)] * len(words)
        self.fields_ = sorted(names)
        self.hasher_ = FeatureHasher(n_features=2**18, input_type="string", alternate_sign=False)
        self.model_ = SGDClassifier(
            loss="log_loss", alpha=1e-5, max_iter=self.epochs, tol=None, random_state=self.seed
        )
        self.model_.fit(self.hasher_.transform(rows), np.asarray(tags), sample_weight=np.asarray(weights))
        return self

    def predict(self, X: pd.DataFrame) -> list[dict[str, dict[str, Any]]]:
        texts = X[self.text].astype(str).tolist()
        spans = [tokens(t) for t in texts]
        flat = [_features([w for w, _, _ in s], i) for s in spans for i in range(len(s))]
        probs = self.model_.predict_proba(self.hasher_.transform(flat)) if flat else np.zeros((0, 1))
        index = {c: j for j, c in enumerate(self.model_.classes_)}
        out, at = [], 0
        for text, s in zip(texts, spans, strict=True):
            p = probs[at : at + len(s)]
            at += len(s)
            best = p.argmax(axis=1) if len(p) else np.array([], dtype=int)
            tagged = self.model_.classes_[best] if len(p) else []
            found: dict[str, dict[str, Any]] = {}
            for field in self.fields_:
                b, i = index.get(f"B-{field}"), index.get(f"I-{field}")
                candidates = []
                k = 0
                while k < len(s):  # each run of this field's tags is a candidate span
                    if tagged[k] not in (f"B-{field}", f"I-{field}"):
                        k += 1
                        continue
                    end = k + 1
                    while end < len(s) and tagged[end] == f"I-{field}":
                        end += 1
                    chances = [p[j, index[str(tagged[j])]] for j in range(k, end)]
                    candidates.append((float(np.mean(chances)), k, end))
                    k = end
                if candidates:
                    score, a, e = max(candidates)
                    found[field] = {"value": text[s[a][1] : s[e - 1][2]], "confidence": round(score, 6)}
                else:
                    chance = max(
                        (float(p[:, c].max()) for c in (b, i) if c is not None and len(p)), default=0.0
                    )
                    found[field] = {"value": None, "confidence": round(1.0 - chance, 6)}
            out.append(found)
        return out


CLASSIFIER = """\
# driftloop project: the document classifier beside the extractor, in the same store.
[project]
name = "doc-types"
task = "classification"
target = "doc_type"
classes = ["referral", "lab_report", "invoice"]

[data]
train = "data/train.csv"

[trainer]
entrypoint = "trainer:train"

[features.text]
type = "text"
max_length = 20000

[features.channel]
type = "categorical"
allowed = ["fax", "email", "post", "portal"]

[store]
url = "{store}"

[monitor]
window = "{window}"

[[alerts]]
name = "doc-type-accuracy"
metric = "accuracy"
op = "<"
threshold = 0.9
min_samples = 30
"""

CLASSIFIER_TRAINER = '''\
"""The document classifier's trainer: words of the text and the channel."""

from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder


def train(X, y):
    features = ColumnTransformer([
        ("words", TfidfVectorizer(min_df=2, sublinear_tf=True), "text"),
        ("channel", OneHotEncoder(handle_unknown="ignore"), ["channel"]),
    ])
    return make_pipeline(features, LogisticRegression(max_iter=1000)).fit(X, y)
'''

CONFIG = """\
# driftloop project: entity extraction from intake documents. See docs/config.md.
[project]
name = "forms"
task = "extraction"
target = "fields"

[data]
train = "data/train.csv"

[trainer]
entrypoint = "trainer:train"

[features.text]
type = "text"
max_length = 20000

[features.channel]
type = "categorical"
allowed = ["fax", "email", "post", "portal"]

[fields.patient_name]
type = "text"
critical = true

[fields.dob]
type = "date"
critical = true

[fields.provider]
type = "text"

[fields.reference]
type = "identifier"

[fields.amount]
type = "amount"

[serving]
host = "127.0.0.1"
port = {port}
reload_interval = "{reload_interval}"

[monitor]
window = "{window}"
schedule = "30s"

[[alerts]]
name = "dob-f1-drop"
metric = "f1.dob"
op = "<"
threshold = 0.8
for = 2                      # two windows of corrections: enough to learn the new layout from
min_samples = 30
repeat_after = 2
retrain = true

[[alerts]]                   # without labels: the field stopped being found
name = "dob-missing"
metric = "presence.dob"
op = "<"
threshold = 0.9

[[alerts]]
name = "dob-format"
metric = "validity.dob"
op = "<"
threshold = 0.9

[retrain]
lookback = 20000
replay_fraction = {replay_fraction}
holdout_fraction = 0.3
min_train_rows = 100
corrected_share = 0.6        # balance corrected with confirmed documents
error_oversampling = 2.0     # oversample documents whose corrections touched low-F1 fields
max_per_class = 400          # cap any one field's stratum

[feedback]
trusted_sources = ["clerk"]  # the intake clerk's corrections are the yardstick for reviewers

[review]
strategies = {{ uncertain = 0.7, audit = 0.3 }}
daily_budget = 100000
overlap = 0.0
min_agreement = 0.6
min_overlap_items = 10
quarantine = true            # a reviewer who disagrees with the trusted labels stops counting

[gate]
primary_metric = "f1_micro"
min_improvement = 0.01
critical_min_f1 = 0.8
max_field_regression = 0.05
min_eval_rows = 60
"""

TRAINER = '''\
"""The project's trainer: driftloop calls train(X, y, **params) and registers what it returns."""

import json

import pandas as pd

from driftloop.demo.forms import TokenTagger


def train(X, y, sample_weight=None, epochs=8):
    return TokenTagger(epochs=epochs).fit(X, y, sample_weight=sample_weight)


def careless(X, y, sample_weight=None, **params):
    """A candidate that never learned dates of birth: better on the other fields, so better
    overall, and blind on a critical one. The gate must reject it and name the field."""
    forgot = [json.dumps({**json.loads(v), "dob": None}) for v in y]
    return TokenTagger().fit(X, pd.Series(forgot, index=y.index), sample_weight=sample_weight)
'''
