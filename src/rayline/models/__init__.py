"""The model in one place: trained models, the servable protocol, features, metrics, registry.

* ``trained`` — ``TrainedModel`` (what training and tuning return) and how its weights are saved;
* ``servable`` — the ``Servable`` protocol, ``flavor_of``, ``describe_model``;
  ``predictor`` — ``RecordPredictor``: any servable model behind ``predict(records)``;
* ``features`` (with ``feature_steps``, ``feature_dask``) — ``FeaturePipeline`` and
  ``FittedFeatures``, applied identically in training, evaluation and serving;
* ``metrics`` — the one set of metric functions (evaluation, gate, tuning, monitoring);
* ``training_data`` — the kinds of data the model code accepts, and ``Split``;
* ``registry`` — the registry protocol and its SQL backend.

Training tasks (``rayline.tasks``) produce models; serving consumes them through the registry's
``load``; monitoring reads what serving logged. Importing this package imports nothing heavy.
"""
