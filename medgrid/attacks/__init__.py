"""The attacks layer: adversarial attacks in [0, 1] pixel space, built from small units as in MadryLab's
robustness library. Imports the data layer (uint8 batches made float) and the shared ground.

- :mod:`medgrid.attacks.steps`: the verbs of one iteration: random start, loss and input gradient;
  step + projection + clamp is the fused op :func:`medgrid.ops.pgd_step`.
- :mod:`medgrid.attacks.pgd`: PGD (Madry et al. 2018): :func:`~medgrid.attacks.pgd.perturb` (the final
  iterate, for training and dataset construction) and one restart that records which samples break.
- :mod:`medgrid.attacks.apgd`: APGD (Croce & Hein 2020) with the CE and targeted DLR losses.
- :mod:`medgrid.attacks.square`: Square (Andriushchenko et al. 2020), the black-box attack of AutoAttack.
- :mod:`medgrid.attacks.sweep`: robust predictions over an epsilon grid (restarts, batching, work skipping).
- :mod:`medgrid.attacks.stages`: the strong evaluation's attacks as data, and the default list per number of classes.
- :mod:`medgrid.attacks.ensemble`: the stages on the samples PGD left, per epsilon.
- :mod:`medgrid.attacks.adaptive`: the full and adaptive schedules (a quarter of each budget, a per-sample stop).
"""
