"""Adapters for ``configs/churn.yaml``: what YAML cannot write as data (a Python model builder).

The dataset generator and the model are the ones of ``flows/churn.py``, so both flows train the
same thing.
"""

from __future__ import annotations

from typing import Any

from flows.churn import make_dataset, mlp_builder

from rayline import task

__all__ = ["make_dataset", "model_builder"]


@task(cpus=0)
def model_builder() -> Any:
    """The ``model_fn`` for ``tune``/``train_torch``: ``make_mlp(n_features, hidden=16)``."""
    return mlp_builder()
