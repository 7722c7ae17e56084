"""The op contracts: every argument that crosses the ``torch.library`` boundary, named, in one place.

Each fused op family has a forward and a backward op per fused backend: ``fastspike::<family>_forward`` /
``<family>_backward`` for 'native' (``fastspike._C``), ``fastspike::triton_<family>_forward`` / ``..._backward``
for 'triton'. Families: ``neuron`` (SpikingJelly's IF/LIF/PLIF, :mod:`fastspike._neuron_ops`) and
``leaky`` (snnTorch's Leaky/Synaptic, :mod:`fastspike._leaky_ops`).

An :class:`OpSignature` is built from the op's named tensors and flags plus the family's parameter
record (a frozen dataclass, one field per scalar the kernels read). Its :attr:`~OpSignature.schema` is
the op's schema, defined here for the native ops (the C++ kernels are boxed and read their arguments by
these names) and passed to ``triton_op`` for the Triton ones. :meth:`~OpSignature.pack` builds the
positional argument tuple from names; :meth:`~OpSignature.unpack` names a call's arguments again, with
the record rebuilt as ``.params``. The fakes, the autograd glue, the launchers and the tests all go
through these, so no argument is ever found by its position.
"""
from __future__ import annotations

import collections
import dataclasses
import typing
from typing import Optional, Sequence, Tuple

import torch

# The surrogate derivatives the kernels implement. A name's index is its id in csrc/surrogate.h (the tests
# check fastspike._C.SURROGATES against this) and in triton_kernels/common.py. Each surrogate object's
# ``kernel_spec`` is ``(name, alpha, a, b)``, the constants computed in Python double as its own formula
# does; the kernels evaluate g'(x) as:
#
#   sigmoid              s = 1 / (1 + exp(-(x alpha))); (1 - s) s alpha
#   atan                 b / (1 + (a x)^2)
#   piecewise_quadratic  0 if |x| > b else alpha - a |x|
#   piecewise_exp        b exp(a |x|)
#   soft_sign            1 / (b (a + |x|)^2)
#   super_spike          alpha / (|x| + 1)^2
#   erf                  exp(-(x alpha)^2) b
#   fast_sigmoid         1 / (alpha |x| + 1)^2
#   sigmoid_exp          e = exp(a x); alpha e / (e + 1)^2          (snnTorch's sigmoid: a = -slope)
#   straight_through     1
#   triangular           -alpha if x >= 0 else alpha
#   heaviside            1 if x > 0 else 0
#   spike_rate_escape    b exp(a |x - 1|)                           (a = -beta, b = slope)
#   sparse_fast_sigmoid  1 / (alpha |x| + 1)^2 if x > b else 0
#   none                 0                                           (no gradient through the spike)
SURROGATES = ("sigmoid", "atan", "piecewise_quadratic", "piecewise_exp", "soft_sign", "super_spike", "erf",
              "fast_sigmoid", "sigmoid_exp", "straight_through", "triangular", "heaviside", "spike_rate_escape",
              "sparse_fast_sigmoid", "none")

_SCHEMA_TYPES = {str: "str", float: "float", bool: "bool", int: "int", Optional[float]: "float?"}


def record_fields(record: type) -> Tuple[Tuple[str, str], ...]:
    """``(name, schema type)`` of each field of a parameter record, in declaration order."""
    hints = typing.get_type_hints(record)
    return tuple((f.name, _SCHEMA_TYPES[hints[f.name]]) for f in dataclasses.fields(record))


class OpSignature:
    """The schema of one op: ``args`` (``(name, schema type)`` pairs), then the fields of ``params``, and
    named Tensor ``returns``."""

    def __init__(self, name: str, args: Sequence[Tuple[str, str]], params: type, returns: Sequence[str]):
        self.name = name
        self.params_type = params
        self._own = tuple(n for n, _ in args)
        self._fields = tuple(n for n, _ in record_fields(params))
        self.args = tuple(args) + record_fields(params)
        self.returns = tuple(returns)
        self.Args = collections.namedtuple(f"{name}_args", self._own + ("params",))
        self.Out = collections.namedtuple(f"{name}_out", self.returns)

    @property
    def schema(self) -> str:
        args = ", ".join(f"{t} {n}" for n, t in self.args)
        return f"({args}) -> ({', '.join(f'Tensor {r}' for r in self.returns)})"

    def pack(self, params, **named) -> tuple:
        """The positional arguments of a call: the op's own arguments by name, then the record's fields."""
        if not isinstance(params, self.params_type):
            raise TypeError(f"{self.name}: params must be a {self.params_type.__name__}, got {type(params).__name__}")
        if named.keys() != set(self._own):
            missing, extra = set(self._own) - named.keys(), named.keys() - set(self._own)
            raise TypeError(f"{self.name}: missing arguments {sorted(missing)}, unexpected {sorted(extra)}")
        return tuple(named[n] for n in self._own) + tuple(getattr(params, f) for f in self._fields)

    def unpack(self, args: Sequence):
        """``args`` of a call (schema order) as a namedtuple of the op's own arguments and ``.params``."""
        own = len(self._own)
        return self.Args(*args[:own], self.params_type(*args[own:]))

    def grads(self, **named) -> tuple:
        """One gradient per argument in schema order (None for the ones not named), for a backward formula."""
        return tuple(named.get(n) for n, _ in self.args)


@dataclasses.dataclass(frozen=True)
class NeuronParams:
    """The scalars of a SpikingJelly neuron op (:class:`fastspike._spec.NeuronSpec` as the kernels see it).

    ``tau`` is LIF's (1.0 otherwise); ``surrogate`` a name in :data:`SURROGATES` with its constants
    ``sg_alpha``, ``sg_a``, ``sg_b`` (:attr:`fastspike.surrogate.SurrogateFunctionBase.kernel_spec`).
    """

    kind: str
    v_threshold: float
    v_reset: Optional[float]
    tau: float
    decay_input: bool
    detach_reset: bool
    surrogate: str
    sg_alpha: float
    sg_a: float
    sg_b: float


NEURON_FORWARD = OpSignature(
    "neuron_forward",
    (("x_seq", "Tensor"), ("v_init", "Tensor?"), ("k", "Tensor?"), ("v_init_value", "float"),
     ("store_v_seq", "bool"), ("save_h", "bool")),
    NeuronParams, ("spike_seq", "v_last", "v_seq", "h_seq"))
# grad_v_last is None when v_last has no gradient (as in SpikingJelly's graph, not a zero: see csrc/neuron.h).
# need_grad_k: PLIF's dL/dk is computed (else grad_k is empty); with decay_input it reads x_seq.
NEURON_BACKWARD = OpSignature(
    "neuron_backward",
    (("grad_spike_seq", "Tensor"), ("grad_v_last", "Tensor?"), ("grad_v_seq", "Tensor?"), ("h_seq", "Tensor"),
     ("x_seq", "Tensor?"), ("v_init", "Tensor?"), ("k", "Tensor?"), ("v_init_value", "float"),
     ("need_grad_k", "bool")),
    NeuronParams, ("grad_x_seq", "grad_v_init", "grad_k"))


@dataclasses.dataclass(frozen=True)
class LeakyParams:
    """The scalars of an snnTorch neuron op: ``Leaky`` (``synaptic`` False) or ``Synaptic``.

    ``reset``: 'subtract', 'zero' or 'none' (snnTorch's ``reset_mechanism``); ``reset_delay`` as in
    snnTorch; the surrogate as in :class:`NeuronParams` ('none' for ``surrogate_disable``).
    """

    synaptic: bool
    reset: str
    reset_delay: bool
    surrogate: str
    sg_alpha: float
    sg_a: float
    sg_b: float


# beta, alpha (Synaptic), threshold and gsf (the graded spikes factor) are each one element or one per
# neuron of a step; need_* say which of their gradients the backward computes.
LEAKY_FORWARD = OpSignature(
    "leaky_forward",
    (("x_seq", "Tensor"), ("syn_init", "Tensor?"), ("mem_init", "Tensor?"), ("beta", "Tensor"),
     ("alpha", "Tensor?"), ("threshold", "Tensor"), ("gsf", "Tensor"), ("store_seq", "bool"), ("save", "bool"),
     ("save_syn", "bool")),
    LeakyParams, ("spk_seq", "syn_last", "mem_last", "syn_seq", "mem_seq", "pre_seq"))
LEAKY_BACKWARD = OpSignature(
    "leaky_backward",
    (("grad_spk_seq", "Tensor"), ("grad_syn_last", "Tensor?"), ("grad_mem_last", "Tensor"),
     ("grad_syn_seq", "Tensor?"), ("grad_mem_seq", "Tensor?"), ("mem_seq", "Tensor"), ("pre_seq", "Tensor?"),
     ("syn_seq", "Tensor?"), ("syn_init", "Tensor?"), ("mem_init", "Tensor?"), ("beta", "Tensor"),
     ("alpha", "Tensor?"), ("threshold", "Tensor"), ("gsf", "Tensor"), ("need_beta", "bool"),
     ("need_alpha", "bool"), ("need_threshold", "bool"), ("need_gsf", "bool"), ("grad_x_dtype", "ScalarType")),
    LeakyParams, ("grad_x_seq", "grad_syn_init", "grad_mem_init", "grad_beta", "grad_alpha", "grad_threshold",
                  "grad_gsf"))

FAMILIES = {"neuron": (NEURON_FORWARD, NEURON_BACKWARD), "leaky": (LEAKY_FORWARD, LEAKY_BACKWARD)}

# Holds the native ops' definitions (a Library's registrations end with it). The C++ kernels register only
# implementations, so defining the schemas here, before fastspike._C is loaded, makes them the one source.
_NATIVE = torch.library.Library("fastspike", "FRAGMENT")


def define_native_ops() -> None:
    """Define ``fastspike::<family>_forward/_backward`` for every family (once; fastspike.native calls it)."""
    for forward, backward in FAMILIES.values():
        for sig in (forward, backward):
            if not hasattr(torch.ops.fastspike, sig.name):
                _NATIVE.define(sig.name + sig.schema)
