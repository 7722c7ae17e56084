"""fastspike.snntorch against snnTorch 1.0.0 itself: the checks every backend of the leaky family passes.

snnTorch's own Leaky/Synaptic, called once per step, is the oracle. On every backend: fp32 spikes and
states bit-identical, per step and fused over time, with state carried over several calls; gradients of
the input, the initial states and every learnable parameter within 1e-5 of their scale (a parameter shared
by all neurons is a sum that cancels, so it may instead be no farther from an fp64 run of snnTorch than
twice snnTorch's own fp32 result); fp16/bf16 inputs equal to the fp32 computation on the same values.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import fastspike.snntorch as fs

snn = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_surrogate  # noqa: E402

from helpers import assert_bitwise_equal, weights_like  # noqa: E402

RESETS = ("subtract", "zero", "none")
# snnTorch surrogate constructors and fastspike's twins, rotated through the grid.
SURROGATES = [("atan", {}), ("fast_sigmoid", {"slope": 25}), ("sigmoid", {"slope": 4}),
              ("straight_through_estimator", {}), ("triangular", {"threshold": 0.7}), ("heaviside", {}),
              ("spike_rate_escape", {"beta": 1.5, "slope": 3}), ("SFS", {"slope": 25, "B": -0.5})]
SHAPES = [(6, 3, 7), (4, 2, 3, 5), (5, 1, 1), (3, 2, 2053)]


def grid():
    """(kind, reset, reset_delay, per-neuron parameters, learnable, surrogate): every reset x delay of both
    neurons with scalar and per-neuron parameters, learnable or not, the surrogates rotated."""
    cases = []
    for i, (kind, reset, delay, per_neuron) in enumerate(itertools.product(
            ("leaky", "synaptic"), RESETS, (True, False), (False, True))):
        cases.append((kind, reset, delay, per_neuron, i % 3 != 2, SURROGATES[i % len(SURROGATES)]))
    return cases


def case_id(case) -> str:
    kind, reset, delay, per_neuron, learn, (sg, _) = case
    return f"{kind}-{reset}-{'delay' if delay else 'now'}-{'pn' if per_neuron else 'scalar'}-" \
           f"{'learn' if learn else 'fixed'}-{sg}"


def make_pair(case, step_shape, backend, seed=0):
    """The snnTorch neuron of ``case`` and fastspike's, with the same parameters."""
    kind, reset, delay, per_neuron, learn, (sg, params) = case
    g = torch.Generator().manual_seed(seed)

    def value(low, high):
        # Per neuron: one value per feature (the last dims of a step), some outside [0, 1] for beta/alpha.
        if per_neuron:
            return (torch.rand(step_shape[1:], generator=g, dtype=torch.float64) * (high - low) + low).float()
        return torch.tensor((low + high) / 2)

    kw = dict(threshold=value(0.6, 1.2), reset_mechanism=reset, reset_delay=delay, learn_threshold=learn,
              learn_beta=learn)
    beta = value(-0.1, 1.1)
    if kind == "leaky":
        kw.update(graded_spikes_factor=value(0.5, 2.0), learn_graded_spikes_factor=learn)
        theirs = snn.Leaky(beta=beta.clone(), spike_grad=getattr(snn_surrogate, sg)(**params), **kw)
        ours = fs.Leaky(beta=beta.clone(), spike_grad=getattr(fs.surrogate, sg)(**params), backend=backend, **kw)
    else:
        alpha = value(-0.1, 1.1)
        theirs = snn.Synaptic(alpha=alpha.clone(), beta=beta.clone(), spike_grad=getattr(snn_surrogate, sg)(**params),
                              learn_alpha=learn, **kw)
        ours = fs.Synaptic(alpha=alpha.clone(), beta=beta.clone(), spike_grad=getattr(fs.surrogate, sg)(**params),
                           learn_alpha=learn, backend=backend, **kw)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def inputs(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 1.2 + 0.4).to(dtype)


def run_snntorch(neuron, x_seq, synaptic, init=None):
    """snnTorch's per-step loop: (spikes [T, ...], mem [T, ...], syn [T, ...] or None)."""
    if synaptic:
        syn, mem = init if init is not None else neuron.init_synaptic()
    else:
        mem = init if init is not None else neuron.init_leaky()
    spikes, mems, syns = [], [], []
    for x in x_seq:
        if synaptic:
            spk, syn, mem = neuron(x, syn, mem)
            syns.append(syn)
        else:
            spk, mem = neuron(x, mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems), (torch.stack(syns) if synaptic else None)


def run_fused(neuron, x_seq, synaptic, init=None):
    if synaptic:
        syn, mem = init if init is not None else (None, None)
        spk, syn_seq, mem_seq = neuron.sequence(x_seq, syn, mem)
        return spk, mem_seq, syn_seq
    spk, mem_seq = neuron.sequence(x_seq, init)
    return spk, mem_seq, None


def run_per_step(neuron, x_seq, synaptic, init=None):
    return run_snntorch(neuron, x_seq, synaptic, init)


def forward_backward(run, neuron, x_seq, synaptic, init=None):
    """Outputs and gradients (x, the initial states, every parameter) of a weighted loss on all outputs."""
    x = x_seq.detach().clone().requires_grad_()
    init = tuple(t.detach().clone().requires_grad_() for t in init) if init is not None else None
    neuron.zero_grad(set_to_none=True)
    outs = run(neuron, x, synaptic, (init if synaptic else init[0]) if init is not None else None)
    loss = sum((o.double() * weights_like(o, seed)).sum() for seed, o in enumerate(outs) if o is not None)
    loss.backward()
    grads = {"x": x.grad}
    if init is not None:
        grads.update({f"init{i}": t.grad for i, t in enumerate(init)})
    grads.update({n: p.grad for n, p in neuron.named_parameters()})
    return tuple(o.detach() if o is not None else None for o in outs), grads


def assert_grads_close(ours: dict, theirs: dict, exact: dict = None, what: str = "") -> None:
    """Each gradient within 1e-5 of its scale; a one-element one may instead be within twice snnTorch's own
    fp32 distance from ``exact`` (an fp64 snnTorch run)."""
    assert ours.keys() == theirs.keys(), f"{what}: gradients of {sorted(ours)} vs {sorted(theirs)}"
    for name, e in theirs.items():
        a = ours[name]
        assert a is not None and e is not None, f"{what} {name}: missing gradient"
        assert a.shape == e.shape, f"{what} {name}: shape {tuple(a.shape)} vs {tuple(e.shape)}"
        assert torch.equal(a.isnan(), e.isnan()), f"{what} {name}: NaN positions differ"
        a64, e64 = a.double().nan_to_num(), e.double().nan_to_num()
        err = (a64 - e64).abs().max().item()
        scale = e64.abs().max().item()
        if err <= 1e-5 * scale or scale == 0 and err == 0:
            continue
        assert exact is not None and e.numel() == 1, f"{what} {name}: max error {err:.3e} > 1e-5 x {scale:.3e}"
        x = exact[name].double().item()
        assert abs(a64.item() - x) <= max(2 * abs(e64.item() - x), 1e-5 * abs(x)), \
            f"{what} {name}: {a64.item()} vs fp64 {x} (snnTorch fp32 {e64.item()})"


class LeakyChecks:
    """The checks of the module docstring; a test module subclasses this as ``Test...`` with ``backend``."""

    backend = ""
    device = "cpu"
    shapes = SHAPES

    def _pair(self, case, step_shape, seed=0):
        return tuple(m.to(self.device) for m in make_pair(case, step_shape, self.backend, seed))

    def _compare(self, case, shape, run, seed=0, init=False):
        synaptic = case[0] == "synaptic"
        theirs, ours = self._pair(case, shape[1:], seed)
        x = inputs(shape, seed=seed).to(self.device)
        init_states = None
        if init:
            g = torch.Generator().manual_seed(seed + 100)
            init_states = tuple((torch.rand(shape[1:], generator=g) * 1.5).to(self.device)
                                for _ in range(2 if synaptic else 1))
        ref_outs, ref_grads = forward_backward(run_snntorch, theirs, x, synaptic, init_states)
        outs, grads = forward_backward(run, ours, x, synaptic, init_states)
        for name, a, e in zip(("spikes", "mem", "syn"), outs, ref_outs):
            if e is not None:
                assert_bitwise_equal(a, e, f"{self.backend} {name}")
        exact = None
        if any(g is not None and g.numel() == 1 for g in ref_grads.values()):
            theirs64 = self._pair(case, shape[1:], seed)[0].double()
            exact = forward_backward(run_snntorch, theirs64, x.double(), synaptic,
                                     tuple(t.double() for t in init_states) if init_states else None)[1]
        assert_grads_close(grads, ref_grads, exact, f"{self.backend} {case_id(case)}")

    @pytest.mark.parametrize("case", grid(), ids=case_id)
    def test_sequence_matches_snntorch(self, case):
        for i, shape in enumerate(self.shapes[:3]):
            self._compare(case, shape, run_fused, seed=i, init=i == 1)

    @pytest.mark.parametrize("case", grid()[::3], ids=case_id)
    def test_per_step_matches_snntorch(self, case):
        self._compare(case, self.shapes[0], run_per_step, seed=3, init=True)

    @pytest.mark.parametrize("case", grid()[1::4], ids=case_id)
    def test_over_several_cpu_chunks(self, case):
        self._compare(case, self.shapes[3], run_fused, seed=4)

    @pytest.mark.parametrize("case", grid()[::5], ids=case_id)
    def test_state_carries_over_calls(self, case):
        # Two fused calls then two single steps, no reset in between: the module's state carries over.
        synaptic = case[0] == "synaptic"
        theirs, ours = self._pair(case, (2, 9))
        x = inputs((9, 2, 9), seed=5).to(self.device)
        ref = run_snntorch(theirs, x, synaptic)
        with torch.no_grad():
            parts = [run_fused(ours, x[:4], synaptic), run_fused(ours, x[4:7], synaptic),
                     run_per_step(ours, x[7:], synaptic, (ours.syn, ours.mem) if synaptic else ours.mem)]
        for i, name in enumerate(("spikes", "mem", "syn")):
            if ref[i] is not None:
                assert_bitwise_equal(torch.cat([p[i] for p in parts]), ref[i].detach(), f"carried {name}")

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    @pytest.mark.parametrize("case", grid()[::7], ids=case_id)
    def test_16bit_inputs_compute_in_fp32(self, case, dtype):
        synaptic = case[0] == "synaptic"
        theirs, ours = self._pair(case, (3, 8))
        x = inputs((5, 3, 8), dtype, seed=6).to(self.device)
        ref_outs, ref_grads = forward_backward(run_snntorch, theirs, x.float(), synaptic)
        outs, grads = forward_backward(run_fused, ours, x, synaptic)
        for name, a, e in zip(("spikes", "mem", "syn"), outs, ref_outs):
            if e is not None:
                assert_bitwise_equal(a, e, f"{self.backend} {dtype} {name}")
        assert grads["x"].dtype == dtype
        torch.testing.assert_close(grads["x"].float(), ref_grads["x"].to(dtype).float(), rtol=0,
                                   atol=2 * torch.finfo(dtype).eps * ref_grads["x"].abs().max().item())

    def test_last_state_only(self):
        case = ("synaptic", "subtract", True, False, True, SURROGATES[0])
        _, ours = self._pair(case, (2, 5))
        x = inputs((6, 2, 5), seed=7).to(self.device)
        spk_all, syn_all, mem_all = ours.sequence(x)
        ours.reset()
        spk, syn, mem = ours.sequence(x, states="last")
        assert_bitwise_equal(spk, spk_all, "spikes")
        assert_bitwise_equal(syn, syn_all[-1], "syn")
        assert_bitwise_equal(mem, mem_all[-1], "mem")
