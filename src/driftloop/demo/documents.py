"""The ``documents`` template: a seeded document stream whose layouts and wording change.

Three kinds of document arrive at an intake desk: referrals, lab reports and invoices, each
written from its own phrases with names, dates and amounts filled in. Concept A is the old
paper world. In concept B a new portal takes over: documents come through it, invoices turn
into "billing statements" with a "total payable", lab reports gain panel codes and an
"e-result" header, and referrals arrive as "e-referral" forms that share the portal's
boilerplate with the other kinds; a classifier of A's words confuses them. The vocabulary
report names the new terms before labels arrive.

>>> df = documents(5, "A", seed=1)
>>> sorted(df.columns)
['channel', 'doc_type', 'pages', 'text']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CONFIG", "TRAINER", "documents"]

KINDS = ["referral", "lab_report", "invoice"]
_NAMES = ["Ana Ruiz", "Ben Okafor", "Chen Wei", "Dana Novak", "Eli Haddad", "Fay Lund", "Gus Patel"]
_PHRASES = {
    "A": {
        "referral": [
            "Dear colleague, I am referring {name} for assessment.",
            "Reason for referral: persistent symptoms since {date}.",
            "Please see this patient at your earliest convenience.",
            "Referring physician signature and stamp below.",
            "Relevant history and current medication attached.",
        ],
        "lab_report": [
            "Laboratory report for {name}, specimen collected {date}.",
            "Haemoglobin {num} g/dL, within the reference range.",
            "Glucose fasting {num} mmol/L; cholesterol total {num}.",
            "Results reviewed and validated by the laboratory.",
            "Reference ranges are printed beside each result.",
        ],
        "invoice": [
            "Invoice number {code} issued to {name} on {date}.",
            "Amount due: {amount} EUR, payment within 30 days.",
            "Please quote the invoice number with your payment.",
            "Bank transfer details are listed at the foot of this page.",
            "VAT included where applicable; thank you for your business.",
        ],
    },
    "B": {
        "referral": [
            "e-Referral form {code} submitted via the patient portal for {name}.",
            "Portal reference {code}; request type: specialist review.",
            "Clinical summary uploaded on {date}; triage priority routine.",
            "Submitted through the portal; document generated automatically.",
            "Attachments: portal summary, medication list.",
        ],
        "lab_report": [
            "e-Result {code} for {name}, panel CMP-14 released {date}.",
            "Panel result: HGB {num}, GLU {num}, flagged values none.",
            "Released to the patient portal; document generated automatically.",
            "Panel codes follow the new portal catalogue.",
            "Portal reference {code}; results summary attached.",
        ],
        "invoice": [
            "Billing statement {code} for {name}, generated {date}.",
            "Total payable {amount} EUR via the patient portal.",
            "Portal reference {code}; pay online by card.",
            "Document generated automatically; statement summary attached.",
            "Settle the total payable through the portal checkout.",
        ],
    },
}


def documents(n: int, concept: str = "A", seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """``n`` documents of concept ``"A"`` or ``"B"`` with their ``doc_type``."""
    if concept not in ("A", "B"):
        raise ValueError(f"The 'concept' parameter of documents must be 'A' or 'B'. Got {concept!r} instead.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    kinds = rng.choice(KINDS, n, p=[0.3, 0.35, 0.35])
    phrases = _PHRASES[concept]
    texts, pages = [], []
    for kind in kinds:
        # most lines from the kind's own phrases, some from another kind's (real documents overlap)
        lines = []
        for _ in range(int(rng.integers(3, 6))):
            own = rng.random() < 0.8
            pool = phrases[str(kind)] if own else phrases[str(rng.choice(KINDS))]
            lines.append(str(rng.choice(pool)))
        values = {
            "name": str(rng.choice(_NAMES)),
            "date": f"2026-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
            "num": f"{rng.uniform(3, 15):.1f}",
            "amount": f"{rng.uniform(20, 2500):.2f}",
            "code": f"{rng.choice(list('ABCDEFGH'))}{int(rng.integers(10000, 99999))}",
        }
        texts.append(" ".join(line.format(**values) for line in lines))
        pages.append(float(rng.integers(1, 4) + (kind == "lab_report")))
    channel = rng.choice(
        ["fax", "email", "post", "portal"],
        n,
        p=[0.05, 0.15, 0.05, 0.75] if concept == "B" else [0.35, 0.4, 0.2, 0.05],
    )
    return pd.DataFrame(
        {"text": texts, "pages": pages, "channel": channel.astype(object), "doc_type": kinds.astype(object)}
    )


CONFIG = """\
# driftloop project: a document classifier (referral, lab report, invoice). See docs/config.md.
[project]
name = "documents"
task = "classification"
target = "doc_type"
classes = ["referral", "lab_report", "invoice"]
positive_class = "invoice"   # precision, recall and F1 of invoices are scored on their own

[data]
train = "data/train.csv"

[trainer]
entrypoint = "trainer:train"
params = {{ C = 2.0 }}

[features.text]
type = "text"           # monitored through its length, the hashing embedding and its vocabulary
max_length = 20000

[features.pages]
type = "numeric"
min = 1
max = 500

[features.channel]
type = "categorical"
allowed = ["fax", "email", "post", "portal"]

[serving]
host = "127.0.0.1"
port = {port}
reload_interval = "{reload_interval}"

[monitor]
window = "{window}"
schedule = "30s"

[[alerts]]
name = "accuracy-drop"
metric = "accuracy"
op = "<"
threshold = 0.85
for = 2
cooldown = "10m"
min_samples = 50
retrain = true

[[alerts]]
name = "new-wording"
metric = "vocabulary.text"
op = ">"
threshold = 0.3
for = 1
cooldown = "1h"

[retrain]
lookback = 20000
replay_fraction = {replay_fraction}
holdout_fraction = 0.3

[gate]
primary_metric = "accuracy"
min_improvement = 0.01
max_regression = {{ f1_macro = 0.02, f1 = 0.03 }}
min_eval_rows = 100
"""

TRAINER = '''\
"""The project's trainer: driftloop calls train(X, y, **params) and registers what it returns."""

from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder


def train(X, y, C=2.0):
    features = ColumnTransformer([
        ("words", TfidfVectorizer(min_df=2, ngram_range=(1, 2), sublinear_tf=True), "text"),
        ("channel", OneHotEncoder(handle_unknown="ignore"), ["channel"]),
        ("pages", "passthrough", ["pages"]),
    ])
    return make_pipeline(features, LogisticRegression(C=C, max_iter=1000)).fit(X, y)


def careless(X, y, **params):
    """A deliberately bad candidate (always the most frequent kind): the gate must reject it."""
    return DummyClassifier(strategy="prior").fit(X, y)
'''
