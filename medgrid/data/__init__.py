"""The data layer: what a task is and its files.

``tasks`` (medmnist's INFO, sizes, refusals), ``synthetic`` (the planted-feature generator), ``npz``
(MedMNIST's file layout: write, validate, read), ``prepare`` (make a task's file: generate, copy, download),
``loading`` (a file's splits as uint8 tensors, batches made float one at a time), ``placement`` (device or
host memory on a GPU run), ``corruptions`` (medmnistc's corruptions at 224 px) and ``shift_sets`` (the
MedMNIST-C test sets: download, generate, read). Imports only the shared ground (medgrid's top-level modules).
"""
