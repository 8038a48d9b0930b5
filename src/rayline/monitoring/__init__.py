"""Monitoring: what serving logged, compared with what the model was trained on.

* ``input_log`` — the served records (and predictions) a deployment logs as Parquet for drift;
* ``drift_stats`` — PSI / KS per feature and the ``DriftReport``;
* ``drift_check`` — drift over a window of logged inputs against the training reference;
* ``feedback`` — the production model's metric from predictions and late labels.

The ``Drift`` and ``Metric`` triggers (``rayline.triggers``) poll these. Importing this package
imports nothing heavy.
"""
