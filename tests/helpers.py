"""Traffic through the real app (uvicorn on 127.0.0.1) for monitor and workflow tests."""

from __future__ import annotations

import httpx
import numpy as np

from driftloop.demo.data import applicants
from driftloop.demo.scenario import serve_in_thread
from driftloop.project import Project
from driftloop.serving import create_app


def send(project: Project, n: int, concept: str, seed: int, label_share: float = 0.0) -> list[str]:
    """Predict ``n`` applicants through the API; label a share of them with the truth."""
    df = applicants(n, concept, seed=seed)
    records = df.drop(columns="approved").to_dict(orient="records")
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    with serve_in_thread(create_app(project, background=False)) as url, httpx.Client(base_url=url) as client:
        for start in range(0, n, 500):
            r = client.post("/predict", json={"records": records[start : start + 500]})
            assert r.status_code == 200, r.text
            ids += [p["prediction_id"] for p in r.json()["predictions"]]
        chosen = [
            {"prediction_id": pid, "label": label}
            for pid, label, keep in zip(ids, df["approved"], rng.random(n) < label_share, strict=True)
            if keep
        ]
        for start in range(0, len(chosen), 500):
            assert client.post("/feedback", json={"feedback": chosen[start : start + 500]}).status_code == 200
    return ids
