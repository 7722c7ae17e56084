"""Assertions and marks shared by the test modules."""
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
