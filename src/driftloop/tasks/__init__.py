"""Tasks: everything that differs between kinds of model, behind one small protocol.

Monitor, gate, workflow, sampling, store and serving never ask which kind of model they serve;
they ask the project's task. A task knows:

=====================  ===========================================  ==========================================
the task decides       classification                               regression
=====================  ===========================================  ==========================================
what a trainer returns ``predict_proba`` and ``classes_``           ``predict``
outputs (logged)       class, confidence, class probabilities       the predicted value
a label                one of ``project.classes``                   a finite number
metrics                accuracy, macro F1                           MAE, RMSE, MAPE, R², error quantiles
paired test (gate)     exact McNemar + bootstrap CI                 Wilcoxon on absolute errors + bootstrap CI
label-free estimate    CBPE (confidence -> expected accuracy/F1)    DLE (a model of the absolute error)
slices and strata      accuracy per slice; class; corrected/right   MAE per slice; error quantile
=====================  ===========================================  ==========================================

``generation`` (:mod:`driftloop.tasks.generation`): ``predict`` returns text; a label is a
preferred text; token F1 and ROUGE-L against it; Wilcoxon on per-row overlap; the reference
vocabulary for ``novelty``. Its scorers (custom metrics) and the judge do most of the judging.

``extraction`` (:mod:`driftloop.tasks.extraction`): ``predict`` returns fields with
confidences; a label is the corrected fields; per-field precision, recall and F1 after
normalisers (a boundary-only fix counts half), document exact match, micro and macro F1;
Wilcoxon on per-document F1; per-field calibrated precision from the confidences.

Tasks are found through the plain dict :data:`TASKS`; :func:`make_task` builds the one a
project's settings name.

>>> from driftloop.config import Settings
>>> s = Settings.from_dict({"project": {"name": "p", "target": "y", "classes": ["a", "b"]},
...     "features": {"x": {"type": "numeric"}}, "data": {"train": "t.csv"},
...     "trainer": {"entrypoint": "m:f"}}, root="/tmp")
>>> task = make_task(s)
>>> task.name, task.primary_metric, task.metrics(["a", "b"], ["a", "a"])["accuracy"]
('classification', 'accuracy', 0.5)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from driftloop.exceptions import ConfigError
from driftloop.tasks._base import ROW, Predictions, Task, predictions_frame, read_predictions
from driftloop.tasks.classification import Classification
from driftloop.tasks.extraction import Extraction
from driftloop.tasks.generation import Generation
from driftloop.tasks.regression import Regression

if TYPE_CHECKING:
    from driftloop.config import Settings

__all__ = [
    "ROW",
    "TASKS",
    "Classification",
    "Extraction",
    "Generation",
    "Predictions",
    "Regression",
    "Task",
    "make_task",
    "predictions_frame",
    "probability_keys",
    "read_predictions",
]

TASKS: dict[str, Callable[[Settings], Task]] = {
    "classification": Classification.from_settings,
    "regression": Regression.from_settings,
    "generation": Generation.from_settings,
    "extraction": Extraction.from_settings,
}


def probability_keys(task: Task) -> list[str]:
    """What a prediction's logged probabilities are keyed by: a classifier's classes, an
    extractor's fields (their confidences), nothing for the others."""
    fields = getattr(task, "fields", None)
    return list(fields) if isinstance(fields, dict) else list(task.classes)


def make_task(settings: Settings) -> Task:
    """The task a project's ``project.task`` names."""
    factory = TASKS.get(settings.project.task)
    if factory is None:
        raise ConfigError(
            f"The 'project.task' setting must be one of {sorted(TASKS)}. "
            f"Got {settings.project.task!r} instead."
        )
    return factory(settings)
