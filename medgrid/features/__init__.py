"""Ilyas et al. (2019), "Adversarial examples are not bugs, they are features": the constructed datasets.

``nonrobust``: D_rand and D_det (targeted attacks on a standard model, relabelled); ``robust``: D_R
(representation inversion on an adversarially trained model); ``dataset``: what they share (seeds, uint8
images, MedMNIST's layout). The models trained on them are ordinary training runs (medgrid.training) on these
files, evaluated on the original test set (medgrid.evaluation).
"""
