"""Assertions and marks shared by the test modules."""
import os
import subprocess
import sys

import pytest
import torch


def gpu_test(skip_mark):
    """A decorator applying ``skip_mark`` (the test's reason not to run here) and the ``cuda`` marker, which
    ``pytest -m cuda`` selects (benchmarks/gpu_check.sh): every test that needs a GPU carries it."""
    return lambda test: pytest.mark.cuda(skip_mark(test))


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """Same dtype, shape and bits (NaN positions must match too)."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")


def assert_grad_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, what: str = "") -> None:
    """Elementwise ``|a - e| <= rtol * max|e|``: a relative bound on the gradient's scale, not per element
    (elements near zero carry cancellation noise that is not an error of the method)."""
    assert actual is not None and expected is not None, f"{what}: missing gradient"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.double(), expected.double()
    assert torch.isfinite(a).all(), f"{what}: non-finite gradient"
    scale = e.abs().max().item()
    assert scale > 0, f"{what}: the expected gradient is all zero, so the comparison would prove nothing"
    err = (a - e).abs().max().item()
    assert err <= rtol * scale, f"{what}: max abs error {err:.3e} > {rtol} x {scale:.3e}"


def weights_like(t: torch.Tensor, seed: int) -> torch.Tensor:
    """Fixed pseudo-random loss weights so every output element gets a distinct gradient."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g, dtype=torch.float64).to(device=t.device, dtype=t.dtype)


def run_under_triton_interpreter(test_file: str) -> None:
    """Re-run the module ``test_file`` in a child pytest with TRITON_INTERPRET=1, which must be set before
    Triton kernels are defined and must not leak into the modules that expect Triton to be unavailable on
    CPU; skips where Triton cannot load at all, and fails with the child's output."""
    from fastspike import triton_kernels
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this process is the interpreter run")
    if triton_kernels._load()[1] is not None:
        pytest.skip(triton_kernels._load()[1])
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
                             "ignore::pytest.PytestUnraisableExceptionWarning", os.path.abspath(test_file)],
                            cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
