"""medgrid.ops: the fused PGD step against its PyTorch reference, and both against hand-worked values.

Kernel tests skip with the import error when the extension ``medgrid._C`` is not built
(``pip install --no-build-isolation -e .`` builds it); CUDA tests skip when no GPU is visible.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from medgrid import ops

NEEDS_EXT = pytest.mark.skipif(
    ops._C is None, reason=f"extension medgrid._C not built: {ops._IMPORT_ERROR}")
HAS_CUDA_KERNEL = "cuda" in ops._KERNEL_DEVICES
NEEDS_CUDA = pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_CUDA_KERNEL),
    reason="needs a visible GPU and medgrid._C built with CUDA kernels "
           f"(cuda available: {torch.cuda.is_available()}, CUDA kernel built: {HAS_CUDA_KERNEL})")

EPS, ALPHA = 8 / 255, 2 / 255
SHAPES = [(1, 1, 28, 28), (5, 1, 28, 28), (4, 3, 28, 28), (3, 3, 64, 64), (2, 3, 224, 224)]
# max |fused - reference| allowed for L2 (the norms are summed in another order); L-inf is exact
L2_ATOL = {torch.float32: 1e-6, torch.float64: 1e-12,
           torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}  # reduced: one unit in the last place near 1


def fused(x_adv, grad, x, *, norm, eps, alpha, targeted=False):
    return torch.ops.medgrid.pgd_step.default(x_adv, grad, x, norm, eps, alpha, targeted)


def make_inputs(shape, *, eps=EPS, dtype=torch.float32, device="cpu", seed=0, zero_grad_rows=()):
    """x in [0, 1] with some pixels exactly 0 and 1, x_adv within eps of x (some beyond, to be
    projected back), grad with exact zeros; `zero_grad_rows` get an all-zero gradient."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    x[x < 0.05] = 0.0
    x[x > 0.95] = 1.0
    x_adv = (x + (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.4 - 1.2) * eps).clamp(0, 1)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    grad[torch.rand(shape, generator=gen) < 0.1] = 0.0
    for row in zero_grad_rows:
        grad[row] = 0.0
    return tuple(t.to(dtype=dtype, device=device) for t in (x_adv, grad, x))


def assert_matches_reference(out, ref, norm):
    assert out.shape == ref.shape and out.dtype == ref.dtype and out.device == ref.device
    if norm == "linf":
        assert torch.equal(out, ref), f"max |diff| = {(out.double() - ref.double()).abs().max().item()}"
    else:
        torch.testing.assert_close(out, ref, atol=L2_ATOL[out.dtype], rtol=0)


def check_against_reference(x_adv, grad, x, **kw):
    out = fused(x_adv, grad, x, **kw)
    ref = ops.pgd_step_reference(x_adv, grad, x, **kw)
    assert_matches_reference(out, ref, kw["norm"])
    assert out.is_contiguous()
    return out


# ---------------------------------------------------------------- the reference (no extension needed)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_linf_hand_worked(impl):
    if impl == "fused" and ops._C is None:
        pytest.skip(f"extension medgrid._C not built: {ops._IMPORT_ERROR}")
    fn = ops.pgd_step_reference if impl == "reference" else fused
    x = torch.tensor([[0.5, 0.5, 0.0, 1.0, 0.3]])
    x_adv = torch.tensor([[0.5, 0.52, 0.0, 1.0, 0.31]])
    grad = torch.tensor([[1.0, -2.0, -1.0, 1.0, 0.0]])
    kw = dict(norm="linf", eps=0.015, alpha=0.01)
    out = fn(x_adv, grad, x, **kw, targeted=False)
    torch.testing.assert_close(out, torch.tensor([[0.51, 0.51, 0.0, 1.0, 0.31]]), atol=1e-7, rtol=0)
    out = fn(x_adv, grad, x, **kw, targeted=True)  # descends: x_adv - alpha*sign(grad)
    torch.testing.assert_close(out, torch.tensor([[0.49, 0.515, 0.01, 0.99, 0.31]]), atol=1e-7, rtol=0)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_l2_hand_worked(impl):
    if impl == "fused" and ops._C is None:
        pytest.skip(f"extension medgrid._C not built: {ops._IMPORT_ERROR}")
    fn = ops.pgd_step_reference if impl == "reference" else fused
    x = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    grad = torch.zeros_like(x)
    grad[0, 0, 0] = torch.tensor([3.0, 4.0])   # unit direction (0.6, 0.8)
    grad[1, 0, 1] = torch.tensor([0.0, -2.0])  # unit direction (0, -1)
    # step 0.1 along the unit gradient, then ||d|| = 0.1 > eps = 0.05: scaled by 0.5
    out = fn(x.clone(), grad, x, norm="l2", eps=0.05, alpha=0.1)
    expected = x.clone()
    expected[0, 0, 0] = torch.tensor([0.53, 0.54], dtype=torch.float64)
    expected[1, 0, 1, 1] = 0.45
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    # inside the ball: no projection
    out = fn(x.clone(), grad, x, norm="l2", eps=1.0, alpha=0.1, targeted=True)
    expected = x.clone()
    expected[0, 0, 0] = torch.tensor([0.44, 0.42], dtype=torch.float64)
    expected[1, 0, 1, 1] = 0.6
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_reference_stays_in_ball_and_box(norm):
    x_adv, grad, x = make_inputs((6, 3, 28, 28), dtype=torch.float64, zero_grad_rows=(2,))
    out = ops.pgd_step_reference(x_adv, grad, x, norm=norm, eps=EPS, alpha=5 * EPS)
    assert out.min() >= 0 and out.max() <= 1
    diff = (out - x).flatten(1)
    if norm == "linf":
        assert diff.abs().max() <= EPS + 1e-12
        # alpha > eps: every pixel with a nonzero gradient ends on the ball's edge (or the box's)
        moved = (grad.flatten(1) != 0) & (x.flatten(1) + EPS <= 1) & (x.flatten(1) - EPS >= 0)
        torch.testing.assert_close(diff[moved].abs(), torch.full_like(diff[moved], EPS))
    else:
        assert (diff.norm(dim=1) <= EPS * (1 + 1e-9)).all()


def test_reference_zero_gradient_and_eps_zero_no_nan():
    x_adv, grad, x = make_inputs((3, 1, 8, 8))
    zero = torch.zeros_like(grad)
    for norm in ("linf", "l2"):
        # from x itself, a zero gradient takes no step (L2: u = 0 divided by 1, no NaN)
        assert torch.equal(ops.pgd_step_reference(x, zero, x, norm=norm, eps=EPS, alpha=ALPHA), x)
        # eps = 0 projects onto x itself, also when ||d|| = 0
        for g in (grad, zero):
            out = ops.pgd_step_reference(x_adv, g, x, norm=norm, eps=0.0, alpha=ALPHA)
            assert torch.equal(out, x)


# ---------------------------------------------------------------- fused CPU kernel vs reference


@NEEDS_EXT
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_shapes(shape, norm, targeted):
    x_adv, grad, x = make_inputs(shape, seed=sum(shape), zero_grad_rows=(0,) if shape[0] > 2 else ())
    check_against_reference(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA, targeted=targeted)


@NEEDS_EXT
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("eps,alpha", [(0.0, ALPHA), (EPS, 0.0), (EPS, 4 * EPS), (0.5, 0.25), (0.0, 0.0)],
                         ids=["eps0", "alpha0", "alpha>eps", "l2-sized", "both0"])
def test_matches_reference_edge_values(norm, eps, alpha):
    x_adv, grad, x = make_inputs((4, 3, 16, 16), eps=max(eps, EPS), seed=3, zero_grad_rows=(1,))
    out = check_against_reference(x_adv, grad, x, norm=norm, eps=eps, alpha=alpha)
    assert not torch.isnan(out).any()
    if eps == 0.0:
        assert torch.equal(out, x)


@NEEDS_EXT
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_zero_gradient(norm):
    x_adv, grad, x = make_inputs((3, 3, 28, 28), seed=5)
    zero = torch.zeros_like(grad)
    out = check_against_reference(x_adv, zero, x, norm=norm, eps=EPS, alpha=ALPHA)
    if norm == "linf":  # no step: only the projection of x_adv (already inside, up to the 1.2*eps draw)
        torch.testing.assert_close(out, torch.clamp(x + (x_adv - x).clamp(-EPS, EPS), 0, 1), atol=0, rtol=0)
    assert torch.equal(fused(x, zero, x, norm=norm, eps=EPS, alpha=ALPHA), x)
    assert torch.equal(fused(x, zero, x, norm=norm, eps=0.0, alpha=ALPHA), x)


@NEEDS_EXT
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("eps", [0.0, 1e-5, 1e-3, 0.5])
@pytest.mark.parametrize("remaining", [0.0, 1e-3, 0.3])
def test_l2_step_back_towards_x(eps, remaining, targeted):
    """x_adv - x = -(1 - remaining) * step, for the step s*alpha*g/||g|| the op takes: it undoes most
    of the perturbation, so ||d||^2 = A + 2cB + c^2 G cancels (the CPU kernel then sums ||d||
    directly) or nearly does."""
    gen = torch.Generator().manual_seed(11)
    x = torch.rand((4, 3, 28, 28), generator=gen, dtype=torch.float64) * 0.4 + 0.3
    grad = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    alpha = 0.05
    unit = grad / torch.linalg.vector_norm(grad.flatten(1), dim=1).view(-1, 1, 1, 1)
    x_adv = x - (1 - remaining) * (-alpha if targeted else alpha) * unit
    x_adv, grad, x = (t.float() for t in (x_adv, grad, x))
    out = check_against_reference(x_adv, grad, x, norm="l2", eps=eps, alpha=alpha, targeted=targeted)
    assert torch.isfinite(out).all()
    assert (out - x).flatten(1).norm(dim=1).max().item() <= eps + 1e-6


@NEEDS_EXT
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("where", ["x_adv", "grad", "x"])
def test_nan_propagates_as_in_reference(norm, where):
    x_adv, grad, x = make_inputs((3, 3, 8, 8), seed=13)
    {"x_adv": x_adv, "grad": grad, "x": x}[where][1, 0, 2, 3] = float("nan")
    out = fused(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA)
    ref = ops.pgd_step_reference(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    # sign(NaN) = (NaN > 0) - (NaN < 0) = 0: a NaN gradient takes no L-inf step; anything else spreads
    assert torch.isnan(out).any() == (not (norm == "linf" and where == "grad"))
    torch.testing.assert_close(out, ref, atol=L2_ATOL[torch.float32], rtol=0, equal_nan=True)


@NEEDS_EXT
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("layout", ["channels_last", "strided", "transposed", "mixed"])
def test_noncontiguous_inputs(norm, layout):
    x_adv, grad, x = make_inputs((4, 3, 32, 32), seed=7)
    if layout == "channels_last":
        args = [t.to(memory_format=torch.channels_last) for t in (x_adv, grad, x)]
    elif layout == "strided":  # every other column of a wider tensor
        args = []
        for t in (x_adv, grad, x):
            wide = torch.zeros(4, 3, 32, 64)
            wide[..., ::2] = t
            args.append(wide[..., ::2])
    elif layout == "transposed":
        args = [t.transpose(2, 3).contiguous().transpose(2, 3) for t in (x_adv, grad, x)]
    else:
        args = [x_adv.to(memory_format=torch.channels_last), grad.transpose(2, 3).contiguous().transpose(2, 3), x]
    assert layout == "mixed" or not any(a.is_contiguous() for a in args)
    out = fused(*args, norm=norm, eps=EPS, alpha=ALPHA)
    assert out.is_contiguous() and out.shape == x_adv.shape
    assert_matches_reference(out, ops.pgd_step_reference(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA), norm)
    assert_matches_reference(out, ops.pgd_step_reference(*args, norm=norm, eps=EPS, alpha=ALPHA), norm)


@NEEDS_EXT
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_other_dtypes(norm, dtype):
    x_adv, grad, x = make_inputs((3, 3, 28, 28), dtype=dtype, seed=11)
    out = check_against_reference(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA, targeted=True)
    assert out.dtype == dtype
    if dtype != torch.float64:  # computed in float32 and rounded once, not op by op in `dtype`
        ref32 = ops.pgd_step_reference(*(t.float() for t in (x_adv, grad, x)), norm=norm, eps=EPS,
                                       alpha=ALPHA, targeted=True)
        assert_matches_reference(out, ref32.to(dtype), norm)


@NEEDS_EXT
@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (7,), (5, 9)], ids=["empty-batch", "1d", "2d"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_other_ranks(shape, norm):
    x_adv, grad, x = make_inputs(shape, seed=13)
    out = check_against_reference(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA)
    assert out.shape == shape


@NEEDS_EXT
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_thread_count_does_not_change_result(norm):
    x_adv, grad, x = make_inputs((16, 3, 64, 64), seed=17)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA)
        torch.set_num_threads(max(2, before))
        many = fused(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


@NEEDS_EXT
def test_inputs_not_modified():
    x_adv, grad, x = make_inputs((2, 3, 16, 16))
    copies = [t.clone() for t in (x_adv, grad, x)]
    for norm in ("linf", "l2"):
        fused(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA)
    assert all(torch.equal(a, b) for a, b in zip((x_adv, grad, x), copies))


@NEEDS_EXT
def test_build_info():
    info = ops.build_info()
    assert set(info) >= {"has_cuda", "openmp", "omp_max_threads", "torch_threads"}
    assert info["has_cuda"] == HAS_CUDA_KERNEL
    assert info["openmp"] is True
    assert info["torch_threads"] == torch.get_num_threads()


# ---------------------------------------------------------------- registration, compile


@NEEDS_EXT
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_opcheck(norm):
    x_adv, grad, x = make_inputs((3, 2, 5, 4), seed=19)
    samples = [
        (x_adv, grad, x, norm, EPS, ALPHA, False),
        (x_adv, grad, x, norm, EPS, ALPHA, True),
        tuple(t.to(memory_format=torch.channels_last) for t in (x_adv, grad, x)) + (norm, 0.0, ALPHA, False),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.medgrid.pgd_step.default, args)


@NEEDS_EXT
def test_torch_compile_fullgraph():
    torch._dynamo.reset()

    def attack_step(x_adv, grad, x):
        a = ops.pgd_step(x_adv, grad, x, norm="linf", eps=EPS, alpha=ALPHA)
        return ops.pgd_step(a, grad, x, norm="l2", eps=0.5, alpha=0.1, targeted=True)

    compiled = torch.compile(attack_step, fullgraph=True, backend="inductor")
    x_adv, grad, x = make_inputs((4, 3, 8, 8), seed=23)
    out = compiled(x_adv, grad, x)
    ref = attack_step(x_adv, grad, x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # the graph holds the custom op itself, not the reference's decomposition
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(attack_step, fullgraph=True, backend=capture)(x_adv, grad, x)
    assert any(n.target is torch.ops.medgrid.pgd_step.default for n in graphs[0].graph.nodes)


def test_the_constant_mark_is_what_dynamo_sets_and_importing_ops_skips_dynamo():
    """medgrid.ops marks _use_fused constant for torch.compile by the attribute torch's decorator sets, without
    importing torch._dynamo (a second in every job's start-up)."""
    import subprocess
    import sys

    code = "import sys, medgrid.ops; print('DYNAMO', 'torch._dynamo' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "DYNAMO False" in proc.stdout, proc.stdout + proc.stderr

    def probe(device_type):
        return True

    marked = torch.compiler.assume_constant_result(probe)
    marks = {k: v for k, v in vars(marked).items()}
    assert marks == {"_dynamo_marked_constant": True}
    assert ops._use_fused._dynamo_marked_constant is True


# ---------------------------------------------------------------- errors


@NEEDS_EXT
def test_op_errors():
    x_adv, grad, x = make_inputs((2, 3, 4, 4))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        fused(x_adv, grad[:1], x, norm="linf", eps=EPS, alpha=ALPHA)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        fused(x_adv, grad, x.reshape(2, 3, 16), norm="l2", eps=EPS, alpha=ALPHA)
    with pytest.raises(TypeError, match="dtype mismatch"):
        fused(x_adv, grad.double(), x, norm="linf", eps=EPS, alpha=ALPHA)
    with pytest.raises(TypeError, match="dtype mismatch"):
        fused(x_adv, grad, x.half(), norm="linf", eps=EPS, alpha=ALPHA)
    with pytest.raises(TypeError, match="floating dtype"):
        fused(*(t.mul(255).to(torch.uint8) for t in (x_adv, grad, x)), norm="linf", eps=1.0, alpha=1.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        fused(x_adv, grad, x, norm="linf", eps=-0.1, alpha=ALPHA)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        fused(x_adv, grad, x, norm="l2", eps=float("nan"), alpha=ALPHA)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        fused(x_adv, grad, x, norm="l2", eps=EPS, alpha=-1.0)
    with pytest.raises(ValueError, match='norm must be "linf" or "l2"'):
        fused(x_adv, grad, x, norm="Linf", eps=EPS, alpha=ALPHA)
    with pytest.raises(RuntimeError, match="batch dimension"):
        fused(*(t.sum() for t in (x_adv, grad, x)), norm="linf", eps=EPS, alpha=ALPHA)


@pytest.mark.parametrize("fn", [ops.pgd_step, ops.pgd_step_reference], ids=["pgd_step", "reference"])
def test_wrapper_errors(fn):
    x_adv, grad, x = make_inputs((2, 3, 4, 4))
    with pytest.raises(ValueError, match="norm must be"):
        fn(x_adv, grad, x, norm="l1", eps=EPS, alpha=ALPHA)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be"):
            fn(x_adv, grad, x, norm="linf", eps=bad, alpha=ALPHA)
        with pytest.raises(ValueError, match="alpha must be"):
            fn(x_adv, grad, x, norm="l2", eps=EPS, alpha=bad)
    with pytest.raises(ValueError, match="shape mismatch"):
        fn(x_adv, grad[:, :2], x, norm="linf", eps=EPS, alpha=ALPHA)
    with pytest.raises(TypeError, match="dtype mismatch"):
        fn(x_adv, grad, x.double(), norm="linf", eps=EPS, alpha=ALPHA)
    with pytest.raises(TypeError, match="floating dtype"):
        fn(*(t.to(torch.int64) for t in (x_adv, grad, x)), norm="linf", eps=EPS, alpha=ALPHA)
    with pytest.raises(ValueError, match="device mismatch"):
        fn(x_adv, grad.to("meta"), x, norm="linf", eps=EPS, alpha=ALPHA)


# ---------------------------------------------------------------- the wrapper's choice of implementation


def _count_reference_calls(monkeypatch):
    calls = []
    real = ops.pgd_step_reference

    def spy(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(ops, "pgd_step_reference", spy)
    return calls


@NEEDS_EXT
def test_wrapper_uses_fused_and_env_forces_reference(monkeypatch):
    x_adv, grad, x = make_inputs((2, 3, 8, 8))
    calls = _count_reference_calls(monkeypatch)
    monkeypatch.delenv("MEDGRID_FUSED", raising=False)
    assert ops.fused_available("cpu")
    out = ops.pgd_step(x_adv, grad, x, norm="linf", eps=EPS, alpha=ALPHA)
    assert calls == [] and torch.equal(out, fused(x_adv, grad, x, norm="linf", eps=EPS, alpha=ALPHA))
    monkeypatch.setenv("MEDGRID_FUSED", "0")
    assert not ops.fused_available("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deliberate choice: no warning
        out0 = ops.pgd_step(x_adv, grad, x, norm="linf", eps=EPS, alpha=ALPHA)
    assert calls == [1] and torch.equal(out0, out)


def test_fallback_warns_once(monkeypatch):
    reference = ops.pgd_step_reference
    monkeypatch.setattr(ops, "_KERNEL_DEVICES", frozenset())  # as if the extension were not built
    monkeypatch.setattr(ops, "_warned", False)
    monkeypatch.delenv("MEDGRID_FUSED", raising=False)
    calls = _count_reference_calls(monkeypatch)
    x_adv, grad, x = make_inputs((2, 1, 8, 8))
    with pytest.warns(RuntimeWarning, match="pure-PyTorch reference"):
        out = ops.pgd_step(x_adv, grad, x, norm="l2", eps=0.5, alpha=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once per process
        ops.pgd_step(x_adv, grad, x, norm="l2", eps=0.5, alpha=0.1)
    assert len(calls) == 2
    assert not ops.fused_available("cpu")
    assert torch.equal(out, reference(x_adv, grad, x, norm="l2", eps=0.5, alpha=0.1))


# ---------------------------------------------------------------- CUDA


@NEEDS_CUDA
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 28, 28), (5, 3, 28, 28), (3, 3, 224, 224), (4, 3, 17, 13)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cuda_matches_reference(shape, dtype, norm, targeted):
    x_adv, grad, x = make_inputs(shape, dtype=dtype, device="cuda", seed=29, zero_grad_rows=(0,))
    out = check_against_reference(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA, targeted=targeted)
    cpu = fused(*(t.cpu() for t in (x_adv, grad, x)), norm=norm, eps=EPS, alpha=ALPHA, targeted=targeted)
    assert_matches_reference(out.cpu(), cpu, norm)


@NEEDS_CUDA
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_cuda_layouts_edges_and_stream(norm):
    x_adv, grad, x = make_inputs((4, 3, 32, 32), device="cuda", seed=31, zero_grad_rows=(1,))
    cl = [t.to(memory_format=torch.channels_last) for t in (x_adv, grad, x)]
    assert_matches_reference(fused(*cl, norm=norm, eps=EPS, alpha=ALPHA),
                             ops.pgd_step_reference(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA), norm)
    # unaligned storage offset: the kernels take their one-element path
    off = [torch.cat([t.flatten(), t.flatten()[:1]])[1:].view(t.shape) for t in (x_adv, grad, x)]
    check_against_reference(*off, norm=norm, eps=EPS, alpha=ALPHA)
    for eps, alpha in ((0.0, ALPHA), (EPS, 0.0), (EPS, 4 * EPS)):
        out = check_against_reference(x_adv, grad, x, norm=norm, eps=eps, alpha=alpha)
        assert not torch.isnan(out).any()
    assert torch.equal(fused(x, torch.zeros_like(grad), x, norm=norm, eps=0.0, alpha=ALPHA), x)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        on_stream = fused(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA)
    stream.synchronize()
    assert torch.equal(on_stream, fused(x_adv, grad, x, norm=norm, eps=EPS, alpha=ALPHA))


@NEEDS_CUDA
def test_cuda_errors_opcheck_compile():
    x_adv, grad, x = make_inputs((2, 3, 8, 8), device="cuda")
    with pytest.raises(RuntimeError, match="device mismatch"):
        fused(x_adv, grad.cpu(), x, norm="linf", eps=EPS, alpha=ALPHA)
    for norm in ("linf", "l2"):
        torch.library.opcheck(torch.ops.medgrid.pgd_step.default, (x_adv, grad, x, norm, EPS, ALPHA, False))
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, g, b: ops.pgd_step(a, g, b, norm="l2", eps=0.5, alpha=0.1), fullgraph=True)
    torch.testing.assert_close(compiled(x_adv, grad, x), fused(x_adv, grad, x, norm="l2", eps=0.5, alpha=0.1),
                               atol=1e-6, rtol=0)


# ---------------------------------------------------------------- L2 steps of full length, however small the gradient

# The kernels sum grad^2 in the compute type and trust sqrt(sum) as ||grad|| only when the sum is
# finite and >= numel * min/eps of that type (csrc/pgd_step.h, l2_sums_trusted); otherwise they
# take the exact scheme u = grad / max|grad|. The scales below are chosen on either side of that
# threshold (checked by assert_path), so each path is forced: float32 squares of 1e-14 are normal
# (fast path, where the old ||grad|| + 1e-12 shrank the step to 22% of alpha), those of 1e-30
# underflow to 0 and those of 1e30 overflow (exact path; the old step was 0 for both).
TINY_SCALES = {torch.float32: {"fast": [1e-14, 2.0 ** -40], "exact": [1e-30, 2.0 ** -100, 1e30]},
               torch.float64: {"fast": [1e-14, 1e-30, 1e-100], "exact": [1e-170, 2.0 ** -600, 1e-310, 1e160]}}


def assert_path(grad, path):
    """grad's samples take `path` in the kernels (the threshold of l2_sums_trusted)."""
    info = torch.finfo(grad.dtype)
    sums = grad.double().flatten(1).pow(2).sum(dim=1)
    trusted = torch.isfinite(sums) & (sums >= grad[0].numel() * info.tiny / info.eps)
    if info.bits == 32:  # a float32 square that overflows is caught too
        trusted &= grad.flatten(1).abs().amax(dim=1).double() ** 2 <= info.max
    assert bool(trusted.all()) == (path == "fast") and bool(trusted.any()) == (path == "fast"), path


def unprojected_inputs(shape, scale, dtype, seed=41):
    """x and x_adv in [0.3, 0.7] (a step of alpha = 0.05 reaches neither 0 nor 1), grad = scale * N(0, 1)
    with exact zeros; float64 scaling, rounded once to `dtype`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=torch.float64) * 0.3 + 0.35
    x_adv = x + (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5) * 0.04
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    grad[torch.rand(shape, generator=gen) < 0.1] = 0.0
    return x_adv.to(dtype), (grad * scale).to(dtype), x.to(dtype)


def assert_full_length_step(out, x_adv, grad, alpha, targeted):
    """out - x_adv = s * alpha * grad / ||grad|| per sample: length alpha within 1e-5 relative, and
    the direction of grad (the unit direction computed in float64 after scaling grad up exactly)."""
    step = (out.double() - x_adv.double()).flatten(1)
    lengths = step.norm(dim=1)
    torch.testing.assert_close(lengths, torch.full_like(lengths, alpha), rtol=1e-5, atol=0)
    g = grad.double().flatten(1)
    g = g / g.abs().amax(dim=1, keepdim=True)
    unit = g / g.norm(dim=1, keepdim=True)
    sign = -1.0 if targeted else 1.0
    torch.testing.assert_close(step, sign * alpha * unit, rtol=0, atol=4 * torch.finfo(out.dtype).eps)


L2_SCALE_CASES = [(dtype, path, scale) for dtype, paths in TINY_SCALES.items()
                  for path, scales in paths.items() for scale in scales]


def case_id(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value).replace("torch.", "")


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("dtype,path,scale", L2_SCALE_CASES, ids=case_id)
def test_l2_step_full_length_for_tiny_and_huge_gradients(dtype, path, scale, impl, targeted):
    if impl == "fused" and ops._C is None:
        pytest.skip(f"extension medgrid._C not built: {ops._IMPORT_ERROR}")
    fn = ops.pgd_step_reference if impl == "reference" else fused
    x_adv, grad, x = unprojected_inputs((3, 3, 28, 28), scale, dtype)
    assert_path(grad, path)
    alpha = 0.05
    out = fn(x_adv, grad, x, norm="l2", eps=10.0, alpha=alpha, targeted=targeted)
    assert_full_length_step(out, x_adv, grad, alpha, targeted)


@NEEDS_EXT
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_l2_exact_path_matches_fast_path(dtype, targeted):
    """The same gradient scaled by a power of two (exact in floating point) on the exact path gives
    the fast path's result (projection, box clamps, zero rows and cancelling steps included)."""
    scale = 2.0 ** -100 if dtype == torch.float32 else 2.0 ** -600
    x_adv, grad, x = make_inputs((4, 3, 28, 28), dtype=dtype, seed=43, zero_grad_rows=(2,))
    rows = [0, 1, 3]
    assert_path(grad[rows], "fast")
    assert_path(grad[rows] * scale, "exact")
    for eps, alpha in ((EPS, ALPHA), (EPS, 4 * EPS), (0.5, 0.25), (0.0, ALPHA)):
        kw = dict(norm="l2", eps=eps, alpha=alpha, targeted=targeted)
        fast = check_against_reference(x_adv, grad, x, **kw)
        exact = check_against_reference(x_adv, grad * scale, x, **kw)
        assert_matches_reference(exact, fast, "l2")
    # a step straight back towards x: the fast path's cancellation fallback vs the exact path
    norms = grad.flatten(1).norm(dim=1)
    unit = grad / torch.where(norms == 0, 1.0, norms).view(-1, 1, 1, 1)  # row 2: zero
    back = (x - 0.999 * (-ALPHA if targeted else ALPHA) * unit).clamp(0, 1)
    kw = dict(norm="l2", eps=EPS, alpha=ALPHA, targeted=targeted)
    assert_matches_reference(check_against_reference(back, grad * scale, x, **kw),
                             check_against_reference(back, grad, x, **kw), "l2")


@NEEDS_EXT
def test_l2_each_sample_takes_its_own_path():
    """One batch with a normal, a tiny (fast path), an underflowing, a huge and a zero gradient, on
    one and on two threads: every nonzero row steps alpha, the zero row only projects."""
    x_adv, grad, x = unprojected_inputs((5, 3, 64, 64), 1.0, torch.float32, seed=47)
    grad = grad * torch.tensor([1.0, 1e-14, 1e-30, 1e30, 0.0]).view(-1, 1, 1, 1)
    assert_path(grad[:2], "fast")
    assert_path(grad[2:], "exact")
    alpha, before = 0.05, torch.get_num_threads()
    try:
        results = []
        for threads in (1, max(2, before)):
            torch.set_num_threads(threads)
            results.append(fused(x_adv, grad, x, norm="l2", eps=10.0, alpha=alpha))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])
    out = results[0]
    assert_full_length_step(out[:4], x_adv[:4], grad[:4], alpha, False)
    assert torch.equal(out[4], x_adv[4])  # inside the ball, nothing to clamp: no step
    assert_matches_reference(out, ops.pgd_step_reference(x_adv, grad, x, norm="l2", eps=10.0, alpha=alpha), "l2")


@NEEDS_EXT
@pytest.mark.parametrize("scale", [1.0, 1e-14, 1e-30], ids=lambda s: f"scale{s:g}")
def test_l2_tiny_gradients_bfloat16(scale):
    """bfloat16 has float32's exponent range: its tiny gradients are computed in float32 like float32's
    (float16 cannot hold them: 1e-14 rounds to 0 there)."""
    x_adv, grad, x = unprojected_inputs((2, 3, 28, 28), scale, torch.bfloat16, seed=53)
    out = check_against_reference(x_adv, grad, x, norm="l2", eps=10.0, alpha=0.05)
    ref32 = ops.pgd_step_reference(*(t.float() for t in (x_adv, grad, x)), norm="l2", eps=10.0, alpha=0.05)
    assert_full_length_step(ref32, x_adv.float(), grad.float(), 0.05, False)
    assert_matches_reference(out, ref32.to(torch.bfloat16), "l2")


@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")], ids=str)
def test_l2_nonfinite_gradient_entry_makes_its_sample_nan(impl, bad):
    if impl == "fused" and ops._C is None:
        pytest.skip(f"extension medgrid._C not built: {ops._IMPORT_ERROR}")
    fn = ops.pgd_step_reference if impl == "reference" else fused
    x_adv, grad, x = make_inputs((3, 3, 8, 8), seed=59)
    grad[1, 2, 3, 4] = bad
    out = fn(x_adv, grad, x, norm="l2", eps=EPS, alpha=ALPHA)
    assert torch.isnan(out[1]).all()
    assert not torch.isnan(out[[0, 2]]).any()
    assert_matches_reference(out[[0, 2]], ops.pgd_step_reference(x_adv[[0, 2]], grad[[0, 2]], x[[0, 2]],
                                                                 norm="l2", eps=EPS, alpha=ALPHA), "l2")


@NEEDS_CUDA
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("dtype,path,scale", L2_SCALE_CASES, ids=case_id)
def test_cuda_l2_step_full_length_for_tiny_and_huge_gradients(dtype, path, scale, targeted):
    x_adv, grad, x = (t.cuda() for t in unprojected_inputs((3, 3, 28, 28), scale, dtype))
    assert_path(grad.cpu(), path)
    out = check_against_reference(x_adv, grad, x, norm="l2", eps=10.0, alpha=0.05, targeted=targeted)
    assert_full_length_step(out.cpu(), x_adv.cpu(), grad.cpu(), 0.05, targeted)
    # one-element loads (odd sample size) and a batch mixing both paths and a zero gradient
    x_adv, grad, x = (t.cuda() for t in unprojected_inputs((4, 3, 17, 13), 1.0, dtype, seed=61))
    grad = grad * torch.tensor([1.0, scale, 0.0, scale], dtype=dtype, device="cuda").view(-1, 1, 1, 1)
    out = check_against_reference(x_adv, grad, x, norm="l2", eps=10.0, alpha=0.05, targeted=targeted)
    rows = [0, 1, 3]
    assert_full_length_step(out[rows].cpu(), x_adv[rows].cpu(), grad[rows].cpu(), 0.05, targeted)
    assert torch.equal(out[2], x_adv[2])
