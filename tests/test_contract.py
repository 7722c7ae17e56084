"""The op contracts: schemas from the named records, the one surrogate table, and the family slices that
docs/adding-a-neuron.md lists."""
import dataclasses
import os

import pytest
import torch

import fastspike.snntorch as fs
from fastspike import _contract, backends, native, surrogate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLICE = ("csrc/{f}.h", "csrc/{f}_cpu.cpp", "csrc/{f}_cuda.cu", "csrc/{f}_ops.cpp", "triton_kernels/{f}.py",
         "fastspike/_{f}_ops.py", "fastspike/reference/{f}.py")


@pytest.mark.parametrize("family", list(_contract.FAMILIES))
def test_every_family_is_a_full_slice(family):
    for pattern in SLICE:
        assert os.path.isfile(os.path.join(ROOT, pattern.format(f=family))), pattern.format(f=family)
    assert set(backends._IMPLS[family]) == set(backends.BACKENDS)
    with open(os.path.join(ROOT, "docs", "adding-a-neuron.md")) as f:
        doc = f.read()
    for pattern in SLICE:
        assert pattern.format(f="foo") in doc, f"docs/adding-a-neuron.md does not name {pattern}"


def test_native_schemas_are_the_signatures():
    if native.unavailable_reason("cpu") is not None:
        pytest.skip(native.unavailable_reason("cpu"))
    for forward, backward in _contract.FAMILIES.values():
        for sig in (forward, backward):
            op = getattr(torch.ops.fastspike, sig.name).default
            assert str(op._schema) == f"fastspike::{sig.name}{sig.schema}"


def test_kernel_surrogate_names_match_the_table():
    module, reason = native._load()
    if reason is not None:
        pytest.skip(reason)
    assert tuple(module.SURROGATES.split(",")) == _contract.SURROGATES


def test_every_surrogate_object_names_a_kernel_surrogate():
    objects = [cls() for cls in (surrogate.Sigmoid, surrogate.ATan, surrogate.PiecewiseQuadratic,
                                 surrogate.PiecewiseExp, surrogate.SoftSign, surrogate.SuperSpike, surrogate.Erf,
                                 surrogate.FastSigmoid)]
    objects += [fs.surrogate.atan(), fs.surrogate.fast_sigmoid(), fs.surrogate.sigmoid(),
                fs.surrogate.straight_through_estimator(), fs.surrogate.triangular(), fs.surrogate.heaviside(),
                fs.surrogate.spike_rate_escape(), fs.surrogate.SFS(), fs.surrogate.NoSurrogate()]
    names = [o.kernel_spec[0] for o in objects]
    assert set(names) == set(_contract.SURROGATES)  # atan and fast_sigmoid are in both APIs
    assert all(len(o.kernel_spec) == 4 and all(isinstance(v, float) for v in o.kernel_spec[1:]) for o in objects)


def test_pack_and_unpack_by_name():
    sig = _contract.NEURON_FORWARD
    p = _contract.NeuronParams(kind="lif", v_threshold=1.0, v_reset=None, tau=2.0, decay_input=True,
                               detach_reset=False, surrogate="atan", sg_alpha=2.0, sg_a=3.0, sg_b=1.0)
    x = torch.zeros(2, 3)
    args = sig.pack(p, x_seq=x, v_init=None, k=None, v_init_value=0.5, store_v_seq=True, save_h=False)
    assert len(args) == len(sig.args) and args[0] is x
    a = sig.unpack(args)
    assert a.params == p and a.v_init_value == 0.5 and a.store_v_seq and a.x_seq is x
    with pytest.raises(TypeError, match=r"missing arguments \['save_h'\]"):
        sig.pack(p, x_seq=x, v_init=None, k=None, v_init_value=0.5, store_v_seq=True)
    with pytest.raises(TypeError, match="unexpected"):
        sig.pack(p, x_seq=x, v_init=None, k=None, v_init_value=0.5, store_v_seq=True, save_h=False, w=None)
    with pytest.raises(TypeError, match="NeuronParams"):
        sig.pack(dataclasses.asdict(p), x_seq=x, v_init=None, k=None, v_init_value=0.5, store_v_seq=True,
                 save_h=False)
    grads = sig.grads(x_seq=x)
    assert len(grads) == len(sig.args) and grads[0] is x and all(g is None for g in grads[1:])
    assert "float? v_reset" in sig.schema and sig.schema.endswith("-> (Tensor spike_seq, Tensor v_last, "
                                                                  "Tensor v_seq, Tensor h_seq)")
