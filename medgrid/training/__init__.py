"""The training layer: standard and adversarial training of one grid cell (``loop``), with the epoch kept by
validation balanced accuracy or a fixed budget. Imports evaluation (validation predictions and health), the
attacks, the data and the shared ground.
"""
