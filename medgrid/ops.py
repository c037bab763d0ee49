"""The fused PGD step: ``torch.ops.medgrid.pgd_step`` when the extension is built, a
pure-PyTorch reference otherwise.

One call returns the next PGD iterate (step + projection + clamp to the image box [0, 1]):

- ``linf``: ``clamp(x + clamp(x_adv + s*alpha*sign(grad) - x, -eps, eps), 0, 1)``
- ``l2``:   ``g = grad / ||grad||_2``; ``d = x_adv + s*alpha*g - x``;
  ``d *= min(1, eps / ||d||_2)``; ``clamp(x + d, 0, 1)``

with ``s = -1`` for a targeted attack (descend towards the target class) and ``+1`` otherwise,
norms per sample (over every dim but the first), ``sign(v) = (v > 0) - (v < 0)`` (so a zero or
NaN gradient entry takes no step), ``||d|| = 0`` giving the factor 1 and ``eps = 0`` giving
``d = 0``. float16/bfloat16 inputs are computed in float32 and rounded once at the end.

The L2 direction has full length ``alpha`` for every nonzero gradient, however small or large:
``grad / ||grad||_2`` is computed as ``u / ||u||_2`` with ``u = grad / max|grad|`` per sample
(its largest entry is 1, so ``1 <= ||u||_2^2 <= numel`` and the squares can neither underflow nor
overflow). This equals ``grad / max(||grad||_2, tiny)`` (``tiny`` the dtype's smallest normal)
wherever ``||grad||_2 >= tiny`` and stays exact below it. A zero gradient takes no step (``u = 0``,
divided by 1); a NaN or infinite gradient entry makes the whole sample NaN. An earlier
``grad / (||grad||_2 + 1e-12)`` shrank the step of exactly the most brittle models (float32 input
gradients of a confident model can have norms near 1e-12 or below; their squares underflow from
about 1e-19) and took no step at all when the squares overflowed.

The result is a new contiguous tensor of ``x_adv``'s shape and dtype; inputs may be
non-contiguous or channels_last. The op has no autograd formula: call it on detached tensors
(as an attack does, under ``torch.no_grad()``).

:func:`pgd_step_reference` is the specification the compiled kernels (``csrc/``) are tested
against: L-inf is bit-exact, L2 agrees to float rounding (the reductions sum in another order).

No silent slow path on a GPU: on a CUDA tensor without a CUDA kernel in the extension (a CPU-only build, or
none) :func:`pgd_step` raises a one-line :class:`~medgrid.errors.UserError` naming the fix; on other devices
it runs the reference with one RuntimeWarning per process. ``MEDGRID_FUSED=0`` in the environment chooses the
reference everywhere, silently.
"""

from __future__ import annotations

import math
import os
import warnings

import torch
from torch import Tensor

from medgrid.errors import UserError
from medgrid.names import ATTACK_NORMS

__all__ = ["build_info", "compiled_devices", "fused_available", "library_path", "missing_kernel", "pgd_step",
           "pgd_step_reference", "plan"]

try:  # loading the library registers torch.ops.medgrid.pgd_step and its kernels
    from medgrid import _C  # type: ignore[attr-defined]
except ImportError as exc:  # not built (MEDGRID_NO_EXT=1, no compiler, ...)
    _C = None
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None


def _kernel_devices() -> frozenset:
    """Device types the compiled op has kernels for (empty when it is not built)."""
    if _C is None:
        return frozenset()
    return frozenset(
        dev for dev, key in (("cpu", "CPU"), ("cuda", "CUDA"))
        if torch._C._dispatch_has_kernel_for_dispatch_key("medgrid::pgd_step", key)
    )


_KERNEL_DEVICES = _kernel_devices()
_warned = False


def fused_available(device: str | torch.device = "cpu") -> bool:
    """True when :func:`pgd_step` on ``device`` runs the compiled op: the extension is built
    with a kernel for that device type and ``MEDGRID_FUSED=0`` is not set."""
    dev_type = torch.device(device).type
    return dev_type in _KERNEL_DEVICES and os.environ.get("MEDGRID_FUSED", "1") != "0"


def build_info() -> dict | None:
    """What the compiled extension reports about itself (``has_cuda``, OpenMP threads...),
    or None when it is not built."""
    return None if _C is None else dict(_C.build_info())


def compiled_devices() -> frozenset:
    """Device types the compiled op has kernels for: {"cpu"}, {"cpu", "cuda"}, or empty when it is not built."""
    return _KERNEL_DEVICES


def library_path() -> str | None:
    """The file of the loaded extension (its GPU code is listed by :func:`medgrid.fatbin.targets`), or None."""
    return None if _C is None else _C.__file__


def missing_kernel(device_type: str) -> str:
    """Why the op has no kernel for ``device_type`` and how to get one (one line)."""
    if device_type != "cuda":
        built = f"medgrid._C is not built ({_IMPORT_ERROR})" if _C is None else f"medgrid._C has no {device_type} kernel"
        return f"{built}; reinstall with `pip install --no-build-isolation -e .` for the fused kernel"
    built = f"medgrid._C is not built ({_IMPORT_ERROR})" if _C is None else "medgrid._C is a CPU-only build"
    return (f"the fused PGD step has no CUDA kernel: {built}. Rebuild it where nvcc is found (`pip install "
            "--no-build-isolation -e .`; with --use-conda, rules that request a GPU use envs/medgrid-gpu.yaml, "
            "which does), check with `medgrid info`, or set MEDGRID_FUSED=0 to run the slower PyTorch reference")


def plan(device_type: str) -> tuple[str, str]:
    """What :func:`pgd_step` does on a device type, and why: ("fused", ""), ("reference", "MEDGRID_FUSED=0"),
    ("reference", why: no kernel, one warning) or ("error", why: no CUDA kernel; it raises)."""
    if os.environ.get("MEDGRID_FUSED", "1") == "0":
        return "reference", "MEDGRID_FUSED=0"
    if device_type in _KERNEL_DEVICES:
        return "fused", ""
    # GPU hours on the slow path only when asked for (MEDGRID_FUSED=0)
    return ("error" if device_type == "cuda" else "reference"), missing_kernel(device_type)


def _use_fused(device_type: str) -> bool:
    # Evaluated once per trace under torch.compile (reads the environment, may warn or raise).
    global _warned
    choice, why = plan(device_type)
    if choice == "error":
        raise UserError(why)
    if choice == "reference" and why != "MEDGRID_FUSED=0" and not _warned:
        _warned = True
        warnings.warn(f"medgrid.ops.pgd_step: using the pure-PyTorch reference because {why}",
                      RuntimeWarning, stacklevel=3)
    return choice == "fused"


# torch.compile: one constant per trace, as @torch.compiler.assume_constant_result marks it; that decorator
# imports torch._dynamo (about 1 s in every medgrid process, a job's start-up), the attribute is all it sets
# (torch/_dynamo/decorators.py; tests/test_ops.py checks it still is)
_use_fused._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _check_args(x_adv: Tensor, grad: Tensor, x: Tensor, norm: str, eps: float, alpha: float) -> None:
    """The op's argument checks, in Python: ValueError for values and shapes, TypeError for dtypes."""
    if norm not in ATTACK_NORMS:
        raise ValueError(f"pgd_step: norm must be 'linf' or 'l2', got {norm!r}")
    for name, value in (("eps", eps), ("alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"pgd_step: {name} must be a number, got {type(value).__name__}")
        if not (value >= 0) or math.isinf(value):
            raise ValueError(f"pgd_step: {name} must be a finite number >= 0, got {value}")
    for name, t in (("x_adv", x_adv), ("grad", grad), ("x", x)):
        if not isinstance(t, Tensor):
            raise TypeError(f"pgd_step: {name} must be a Tensor, got {type(t).__name__}")
    if not x_adv.is_floating_point():
        raise TypeError(f"pgd_step: x_adv must have a floating dtype, got {x_adv.dtype}")
    if grad.dtype != x_adv.dtype or x.dtype != x_adv.dtype:
        raise TypeError(f"pgd_step: dtype mismatch: x_adv {x_adv.dtype}, grad {grad.dtype}, x {x.dtype}")
    if grad.device != x_adv.device or x.device != x_adv.device:
        raise ValueError(f"pgd_step: device mismatch: x_adv {x_adv.device}, grad {grad.device}, x {x.device}")
    if grad.shape != x_adv.shape or x.shape != x_adv.shape:
        raise ValueError(f"pgd_step: shape mismatch: x_adv {tuple(x_adv.shape)}, "
                         f"grad {tuple(grad.shape)}, x {tuple(x.shape)}")
    if x_adv.dim() < 1:
        raise ValueError("pgd_step: inputs need a batch dimension (dim >= 1)")


def pgd_step_reference(x_adv: Tensor, grad: Tensor, x: Tensor, *, norm: str, eps: float,
                       alpha: float, targeted: bool = False) -> Tensor:
    """The specification of the fused op in plain PyTorch (same arguments, same result)."""
    _check_args(x_adv, grad, x, norm, eps, alpha)
    eps, alpha = float(eps), float(alpha)
    dtype = x_adv.dtype
    acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    xa, g, x0 = x_adv.to(acc), grad.to(acc), x.to(acc)
    step = -alpha if targeted else alpha
    if norm == "linf":
        sgn = (g > 0).to(acc) - (g < 0).to(acc)
        d = torch.clamp(xa + sgn * step - x0, min=-eps, max=eps)
    else:
        batch = xa.shape[0]
        per_sample = math.prod(xa.shape[1:])
        view = (batch,) + (1,) * (xa.dim() - 1)
        flat = g.reshape(batch, per_sample)
        # g / ||g|| as u / ||u||, u = g / max|g|: no square underflows or overflows; a zero
        # gradient divides by 1 (no step), a NaN or inf entry gives NaN for the whole sample
        gmax = flat.abs().amax(dim=1) if per_sample else flat.new_zeros(batch)
        u = flat / torch.where(gmax == 0, 1.0, gmax).unsqueeze(1)
        un = torch.linalg.vector_norm(u, dim=1)
        unit = (u / torch.where(un == 0, 1.0, un).unsqueeze(1)).view(xa.shape)
        d = xa + unit * step - x0
        dn = torch.linalg.vector_norm(d.reshape(batch, per_sample), dim=1).view(view)
        # min(1, eps/||d||); ||d|| = 0 -> 1 (d is zero), eps = 0 -> 0; never 0/0
        factor = torch.where(dn > eps, eps / torch.where(dn > eps, dn, 1.0), 1.0)
        d = d * factor
    out = torch.clamp(x0 + d, min=0.0, max=1.0)
    return out.to(dtype).contiguous()


def pgd_step(x_adv: Tensor, grad: Tensor, x: Tensor, *, norm: str, eps: float, alpha: float,
             targeted: bool = False) -> Tensor:
    """Next PGD iterate (see the module docstring): the fused op when it is built for
    ``x_adv``'s device (and ``MEDGRID_FUSED`` is not ``0``), else :func:`pgd_step_reference`
    (with one RuntimeWarning per process when the extension is missing; a UserError on a GPU)."""
    _check_args(x_adv, grad, x, norm, eps, alpha)
    if _use_fused(x_adv.device.type):
        return torch.ops.medgrid.pgd_step.default(x_adv, grad, x, norm, float(eps), float(alpha),
                                                  bool(targeted))
    return pgd_step_reference(x_adv, grad, x, norm=norm, eps=eps, alpha=alpha, targeted=targeted)


if _C is not None:

    @torch.library.register_fake("medgrid::pgd_step")
    def _pgd_step_fake(x_adv, grad, x, norm, eps, alpha, targeted):
        torch._check(norm in ATTACK_NORMS, lambda: f"pgd_step: norm must be 'linf' or 'l2', got {norm!r}")
        torch._check(eps >= 0 and alpha >= 0, lambda: "pgd_step: eps and alpha must be >= 0")
        torch._check(x_adv.is_floating_point(), lambda: "pgd_step: x_adv must have a floating dtype")
        torch._check(grad.dtype == x_adv.dtype and x.dtype == x_adv.dtype,
                     lambda: "pgd_step: dtype mismatch")
        torch._check(grad.device == x_adv.device and x.device == x_adv.device,
                     lambda: "pgd_step: device mismatch")
        torch._check(x_adv.dim() >= 1 and grad.dim() == x_adv.dim() and x.dim() == x_adv.dim(),
                     lambda: "pgd_step: shape mismatch")
        for a, b, c in zip(x_adv.shape, grad.shape, x.shape):
            torch._check(a == b, lambda: "pgd_step: shape mismatch")
            torch._check(a == c, lambda: "pgd_step: shape mismatch")
        return torch.empty_like(x_adv, memory_format=torch.contiguous_format)
