"""A seeded loan-approval generator with two concepts, A (before) and B (after the drift).

Concept A: approval follows credit score, income and debt ratio; the unemployed are declined
more often. Concept B, after the lender changes policy and the applicant mix changes:
younger applicants with lower incomes and more self-employment (covariate drift), debt ratio
weighs far more, credit score less, and business loans are stricter (concept drift).
Labels are flipped with probability ``noise``.

>>> df = applicants(1000, "A", seed=1)
>>> sorted(df.columns)
['age', 'approved', 'credit_score', 'debt_ratio', 'employment', 'income', 'purpose']
>>> set(df["approved"]) == {"yes", "no"}
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["FEATURES", "applicants"]

FEATURES = {
    "income": "numeric",
    "debt_ratio": "numeric",
    "credit_score": "numeric",
    "age": "numeric",
    "employment": "categorical",
    "purpose": "categorical",
}
EMPLOYMENT = ["salaried", "self_employed", "contractor", "unemployed"]
PURPOSE = ["home", "car", "education", "business"]


def applicants(
    n: int, concept: str = "A", seed: int | np.random.Generator = 0, noise: float = 0.02
) -> pd.DataFrame:
    """``n`` applicants under concept ``"A"`` or ``"B"``, with the ``approved`` label."""
    if concept not in ("A", "B"):
        raise ValueError(
            f"The 'concept' parameter of applicants must be 'A' or 'B'. Got {concept!r} instead."
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    b = concept == "B"
    income = rng.lognormal(np.log(42_000 if b else 50_000), 0.5 if b else 0.4, n)
    debt = rng.beta(2.5 if b else 2.0, 4.0 if b else 5.0, n)
    credit = np.clip(rng.normal(660 if b else 680, 70 if b else 60, n), 300, 850)
    age = np.clip(rng.normal(36 if b else 42, 11 if b else 12, n), 18, 90)
    employment = rng.choice(EMPLOYMENT, n, p=[0.45, 0.3, 0.18, 0.07] if b else [0.6, 0.2, 0.1, 0.1])
    purpose = rng.choice(PURPOSE, n, p=[0.3, 0.3, 0.2, 0.2])
    income_z = (np.log(income) - np.log(50_000)) / 0.4
    debt_z = (debt - 0.3) / 0.16
    credit_z = (credit - 680) / 60
    emp = pd.Series(employment)
    if b:
        score = (
            0.2 * credit_z
            + 0.8 * income_z
            - 2.5 * debt_z
            + 0.5
            + emp.map(
                {"salaried": 0.0, "self_employed": 0.8, "contractor": 0.0, "unemployed": -1.5}
            ).to_numpy()
            + pd.Series(purpose).map({"home": 0.2, "car": 0.0, "education": 0.4, "business": -1.5}).to_numpy()
        )
    else:
        score = (
            1.2 * credit_z
            + 1.0 * income_z
            - 1.2 * debt_z
            + emp.map(
                {"salaried": 0.2, "self_employed": -0.3, "contractor": 0.0, "unemployed": -1.5}
            ).to_numpy()
        )
    approved = score > 0
    flip = rng.random(n) < noise
    approved = np.where(flip, ~approved, approved)
    return pd.DataFrame(
        {
            "income": income.round(0),
            "debt_ratio": debt.round(4),
            "credit_score": credit.round(0),
            "age": age.round(0),
            "employment": employment,
            "purpose": purpose,
            "approved": np.where(approved, "yes", "no"),
        }
    )
