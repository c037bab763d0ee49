"""The evaluation layer: what a checkpoint is worth on a test set, as tidy rows.

``evaluate`` (one checkpoint: clean, health, PGD, strong, checks, corruptions), ``predict`` (a model over a
split), ``metrics`` (sklearn's metrics as MedMNIST defines them), ``health`` (is a model degenerate?),
``strong`` (the ensemble of attack stages on PGD's survivors), ``sanity`` (the gradient-masking checks),
``worst`` (the per-sample worst case over every attack run) and ``shift`` (the MedMNIST-C rows). Imports the attacks, the data and the shared ground; the training loop uses
``predict``, ``metrics`` and ``health`` on the validation split, so this layer sits below training.
"""
