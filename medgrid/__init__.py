"""medgrid: the robustness-accuracy trade-off of medical image classifiers, measured as one grid."""

__version__ = "0.2.0"
