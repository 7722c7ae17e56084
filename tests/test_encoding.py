"""fastspike.encoding: encoder statistics and the output losses against hand-computed values."""
import math

import pytest
import torch
import torch.nn.functional as F

from fastspike import encoding


def test_direct_repeats_the_input():
    x = torch.rand(3, 1, 4, 4)
    seq = encoding.direct(x, 5)
    assert seq.shape == (5, 3, 1, 4, 4)
    assert all(torch.equal(s, x) for s in seq)


def test_poisson_rate_matches_intensity():
    x = torch.linspace(0, 1, 101)
    g = torch.Generator().manual_seed(0)
    seq = encoding.poisson(x, 5000, generator=g)
    assert seq.shape == (5000, 101) and seq.dtype == x.dtype
    assert set(seq.unique().tolist()) <= {0.0, 1.0}
    rate = seq.mean(0)
    # Binomial standard deviation at most sqrt(0.25 / 5000) = 0.007; 0.03 is over 4 sigma.
    assert (rate - x).abs().max() < 0.03
    assert rate[0] == 0 and rate[-1] == 1
    # Independent steps: the correlation between consecutive steps is near 0.
    mid = seq[:, 50]
    assert abs(torch.corrcoef(torch.stack([mid[:-1], mid[1:]]))[0, 1]) < 0.05
    assert not torch.equal(seq, encoding.poisson(x, 5000, generator=torch.Generator().manual_seed(1)))


def test_latency_one_spike_earlier_for_brighter():
    T = 10
    x = torch.cat([torch.zeros(1), torch.linspace(0.001, 1, 300)])
    seq = encoding.latency(x, T)
    assert seq.shape == (T, 301)
    counts = seq.sum(0)
    assert counts[0] == 0 and (counts[1:] == 1).all()
    t_first = seq[:, 1:].argmax(0)
    assert (t_first[1:] <= t_first[:-1]).all(), "spike time must not increase with intensity"
    assert t_first[0] == T - 1 and t_first[-1] == 0
    assert t_first.unique().numel() == T  # every step is used by some intensity
    assert torch.equal(encoding.latency(torch.tensor([0.5]), 3)[:, 0], torch.tensor([0.0, 1.0, 0.0]))


def test_encode_by_name_and_errors():
    x = torch.rand(2, 3)
    assert torch.equal(encoding.encode(x, 4, "direct"), encoding.direct(x, 4))
    with pytest.raises(ValueError, match="unknown encoder"):
        encoding.encode(x, 4, "phase")
    with pytest.raises(ValueError, match="T must be a positive integer"):
        encoding.poisson(x, 0)
    with pytest.raises(TypeError, match="floating-point"):
        encoding.latency(torch.ones(2, dtype=torch.uint8), 4)


def test_losses_against_hand_values():
    # T=2, N=2, K=3.
    s = torch.tensor([[[1.0, 0, 0], [0, 1, 1]],
                      [[1.0, 1, 0], [0, 0, 1]]])
    y = torch.tensor([0, 2])
    rate = torch.tensor([[1.0, 0.5, 0], [0, 0.5, 1]])
    assert math.isclose(encoding.mse_rate_loss(s, y).item(), (0.25 + 0.25) / 6, rel_tol=1e-6)
    assert math.isclose(encoding.ce_rate_loss(s, y).item(), F.cross_entropy(rate, y).item(), rel_tol=1e-6)
    expected = (-math.log(math.exp(2) / (math.exp(2) + math.exp(1) + 1))
                - math.log(math.exp(2) / (1 + math.exp(1) + math.exp(2)))) / 2
    assert math.isclose(encoding.ce_count_loss(s, y).item(), expected, rel_tol=1e-6)
    # ce-step scores each step's spikes: step 0 logits [1, 0, 0] and [0, 1, 1], step 1 [1, 1, 0] and [0, 0, 1].
    e = math.e
    per_step = [math.log((e + 2) / e), math.log((2 * e + 1) / e), math.log((2 * e + 1) / e), math.log((e + 2) / e)]
    assert math.isclose(encoding.ce_step_loss(s, y).item(), sum(per_step) / 4, rel_tol=1e-6)
    with pytest.raises(ValueError, match=r"spike_seq \[T, N, K\]"):
        encoding.mse_rate_loss(s[0], y)


def test_ce_step_is_the_mean_over_steps_of_each_steps_cross_entropy():
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(7, 5, 4, generator=g) < 0.4).float()
    y = torch.randint(0, 4, (5,), generator=g)
    per_step = torch.stack([F.cross_entropy(s[t], y) for t in range(7)]).mean()
    assert torch.allclose(encoding.ce_step_loss(s, y), per_step, rtol=1e-6, atol=0)
    # Not the cross-entropy of the mean rate, which the name ce-rate keeps.
    assert abs(encoding.ce_step_loss(s, y) - encoding.ce_rate_loss(s, y)) > 0.01
    assert encoding.LOSSES["ce-step"] is encoding.ce_step_loss


def test_rate_losses_average_in_fp32():
    # T = 3: the rate 1/3 rounds in bf16 (to 0.333984...), so a bf16 mean would shift both losses.
    s = torch.tensor([[[1.0, 0, 0]], [[0, 1, 0]], [[0, 0, 0]]])
    y = torch.tensor([0])
    for loss in (encoding.mse_rate_loss, encoding.ce_rate_loss):
        assert loss(s.bfloat16(), y).item() == loss(s, y).item(), loss.__name__
