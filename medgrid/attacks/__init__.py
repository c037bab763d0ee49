"""Adversarial attacks in [0, 1] pixel space, built from small units as in MadryLab's robustness library.

- :mod:`medgrid.attacks.steps`: the verbs of one iteration: random start, loss and input gradient;
  step + projection + clamp is the fused op :func:`medgrid.ops.pgd_step`.
- :mod:`medgrid.attacks.pgd`: PGD (Madry et al. 2018): :func:`~medgrid.attacks.pgd.perturb` (the final
  iterate, for training and dataset construction) and one restart that records which samples break.
- :mod:`medgrid.attacks.sweep`: robust predictions over an epsilon grid (restarts, batching, work skipping).
"""
