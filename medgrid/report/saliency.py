"""The saliency figure (the paper's Fig. 1): input gradients of a standard and of robust models.

For a few test images of one task (one per class, in turn), the figure shows the image and, for each
checkpoint, the gradient of the cross-entropy loss of the true label with respect to the input pixels,
on the clean image and on a PGD adversarial example made against that model. The expected picture
(Tsipras et al. 2019, "Robustness may be at odds with accuracy", Fig. 2): standard models' gradients
spread as high-frequency noise (they read non-robust features); adversarially trained models' gradients
follow the robust, perceptible feature.

Display: grey images show the signed gradient on a diverging, colour-blind-safe map (red: raising the
pixel raises the loss), each map scaled to its own 99th percentile of |gradient|, since the models'
gradient magnitudes differ by orders of magnitude.
Colour images show the gradient as an RGB image, clipped to mean +- 3 std and rescaled to [0, 1] per
map (as in Tsipras et al.).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from medgrid import checkpoint, epsilon, seeding
from medgrid.atomic import atomic_output
from medgrid.attacks.pgd import perturb
from medgrid.attacks.steps import default_alpha
from medgrid.data import loading
from medgrid.errors import UserError
from medgrid.labels import NORM_NAME, setting_label
from medgrid.models import eval_mode
from medgrid.names import SYNTHETIC_TASKS

DEFAULT_ATTACK = ("linf", 2 / 255)
DIVERGING_CMAP = "RdBu_r"


def choose_images(labels, n: int) -> list[int]:
    """``n`` test indices, one per class in turn (class 0, 1, ... then again), first occurrences first."""
    labels = [int(v) for v in labels]
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    picks, round_ = [], 0
    while len(picks) < min(n, len(labels)):
        for c in sorted(by_class):
            if round_ < len(by_class[c]) and len(picks) < n:
                picks.append(by_class[c][round_])
        round_ += 1
    return picks


def input_gradient(model, x, y):
    """d CE(model(x), y) / dx per sample (model in eval mode), and the predictions at x."""
    with eval_mode(model), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad.detach(), logits.detach().argmax(1)


def _grad_image(g):
    """(H, W) signed map for one channel, or an (H, W, 3) RGB image in [0, 1] for colour."""
    g = g.cpu().numpy()
    if g.shape[0] == 1:
        return g[0]
    g = np.transpose(g, (1, 2, 0))
    mu, sd = g.mean(), g.std() + 1e-12
    return np.clip((np.clip(g, mu - 3 * sd, mu + 3 * sd) - (mu - 3 * sd)) / (6 * sd), 0, 1)


def saliency_figure(checkpoints, data, out, *, n: int = 4, attack_norm: str | None = None,
                    attack_eps: float | None = None, attack_steps: int = 20, seed: int = 0, dpi: int = 150) -> Path:
    """Write the figure to ``out`` (format by suffix); returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("the saliency figure needs matplotlib: pip install 'medgrid[report]'") from None
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("png", "svg", "pdf"):
        raise UserError(f"--out {out}: the figure is written as .png, .svg or .pdf")
    if n < 1:
        raise UserError("--n must be >= 1")
    if attack_steps < 1:
        raise UserError("--attack-steps must be >= 1")
    if not checkpoints:
        raise UserError("give at least one --checkpoint")
    models, settings = [], []
    for path in checkpoints:
        model, s = checkpoint.load(path)
        models.append(model)
        settings.append(s)
    first = settings[0]
    for path, s in zip(checkpoints[1:], settings[1:]):
        for key in ("task", "size", "n_channels", "n_classes"):
            if s[key] != first[key]:
                raise UserError(f"checkpoints of different {key}: {checkpoints[0]} has {first[key]!r}, "
                                f"{path} has {s[key]!r}; the figure compares models of one task")
    task, size = first["task"], int(first["size"])
    n_classes = int(first["n_classes"]) if task in SYNTHETIC_TASKS else None
    ds = loading.load(task, size, data, n_classes=n_classes, splits=("test",))

    if attack_norm is None or attack_eps is None:
        robust = next(((s["norm"], float(s["eps"])) for s in settings if s["norm"] != "none"), DEFAULT_ATTACK)
        attack_norm = attack_norm or robust[0]
        attack_eps = attack_eps if attack_eps is not None else (robust[1] if robust[0] == attack_norm
                                                                else DEFAULT_ATTACK[1])
    if attack_eps <= 0:
        raise UserError("--attack-eps must be > 0")

    idx = choose_images(ds.test.labels.tolist(), n)
    x = loading.as_float(ds.test.images[idx])
    y = ds.test.labels[idx]
    rows = []  # per model: (grad clean, pred clean, grad adv, pred adv)
    for model in models:
        g_clean, p_clean = input_gradient(model, x, y)
        gen = seeding.torch_generator(seed, seeding.STREAM_SALIENCY)
        x_adv = perturb(model, x, y, norm=attack_norm, eps=attack_eps, alpha=default_alpha(attack_eps, attack_steps),
                        steps=attack_steps, generator=gen)
        g_adv, p_adv = input_gradient(model, x_adv, y)
        rows.append((g_clean, p_clean, g_adv, p_adv))

    k = len(idx)
    n_cols = 1 + 2 * len(models)
    fig, axes = plt.subplots(k, n_cols, figsize=(1.55 * n_cols + 0.3, 1.6 * k + 0.9), squeeze=False)
    grey = x.shape[1] == 1
    attack_text = f"PGD {NORM_NAME[attack_norm]} ε={epsilon.text(attack_norm, attack_eps)}, {attack_steps} steps"
    for r in range(k):
        img = x[r].cpu().numpy()
        ax = axes[r, 0]
        if grey:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(np.transpose(img, (1, 2, 0)))
        ax.set_ylabel(f"label {int(y[r])}", fontsize=9)
        if r == 0:
            ax.set_title("test image", fontsize=9)
        for m, (s, (g_clean, p_clean, g_adv, p_adv)) in enumerate(zip(settings, rows)):
            name = setting_label(s["norm"], float(s["eps"]))
            for j, (g, p, what) in enumerate(((g_clean, p_clean, "∇ clean"), (g_adv, p_adv, "∇ adversarial"))):
                ax = axes[r, 1 + 2 * m + j]
                im = _grad_image(g[r])
                if im.ndim == 2:
                    lim = float(np.quantile(np.abs(im), 0.99)) or 1e-12
                    ax.imshow(im, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim)
                else:
                    ax.imshow(im)
                ok = int(p[r]) == int(y[r])
                ax.set_xlabel(f"pred {int(p[r])} {'✓' if ok else '✗'}", fontsize=8,
                              color="#1a1a1a" if ok else "#b2182b")
                if r == 0:
                    ax.set_title(f"{name}\n{what}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    arch = ", ".join(dict.fromkeys(s["arch"] for s in settings))
    fig.suptitle(f"Input gradients of the loss: {task} ({size} px, {arch}); standard vs adversarially trained\n"
                 f"adversarial: {attack_text} against each model. "
                 + ("Red: raising the pixel raises the loss; each map scaled to its 99th percentile of |∇|."
                    if grey else "Gradient shown as RGB, clipped to ±3 std per map."),
                 fontsize=9.5)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out
