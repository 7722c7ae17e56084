"""Who is measured: the provider registry, where each provider's packages live, and why one cannot run.

A :class:`Provider` is one implementation of the neuron layer (and, for some, of the end-to-end CSNN):
every fastspike backend in :data:`fastspike.backends.BACKENDS` (new backends appear here automatically),
SpikingJelly 0.0.0.0.14 ``backend='torch'``/``'cupy'``, SpikingJelly 2.x as shipped (automatic choice)
and with ``SJ_<NODE>_CUDA_IMPLEMENTATION`` forced to ``triton`` or ``torch``, snnTorch ``Leaky``, a
``torch.compile``'d reference loop, and ``copy`` (``x.clone()``, the roofline).

Providers are grouped by *family*; a family's packages come from one import path (a directory put first
on ``PYTHONPATH`` of its worker subprocess, or the current environment). The two SpikingJelly versions
never share a process. This module imports no peer package: discovery reads installed distribution
metadata, so it is cheap and cannot be broken by a peer that fails to import.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .. import backends

# Families whose code lives in this environment, whatever peer paths are given.
LOCAL_FAMILIES = ("copy", "fastspike", "compile")
# Peer family -> (distribution name, CLI option that points at its directory).
PEER_PACKAGES = {"sj014": ("spikingjelly", "--sj014"), "sj2": ("spikingjelly", "--sj200"),
                 "snntorch": ("snntorch", "--snntorch")}
# SpikingJelly 2.x reads one variable per neuron type when its ops module is imported.
SJ2_IMPLEMENTATION_VARS = ("SJ_IF_CUDA_IMPLEMENTATION", "SJ_LIF_CUDA_IMPLEMENTATION",
                           "SJ_PLIF_CUDA_IMPLEMENTATION")
# The compiled loop is unrolled over T and compiled afresh per configuration (tens of seconds each): it
# runs on the headline neuron only, and not beyond this T, where one compile takes minutes.
COMPILE_MAX_T = 64
COMPILE_NEURON = ("lif", "hard")


@dataclass(frozen=True)
class Provider:
    """One measured implementation.

    ``id`` is the short name used in tables and ``--providers``; ``family`` selects the import path and the
    builder in :mod:`.worker`; ``variant`` is the backend or implementation inside the family; ``env`` holds
    extra environment variables of its worker process; ``suites`` are the :class:`~.suite.Job` suites it
    takes part in; ``cuda_only`` providers are skipped on CPU.
    """

    id: str
    family: str
    variant: str
    about: str
    suites: Tuple[str, ...] = ("neuron",)
    cuda_only: bool = False
    env: Tuple[Tuple[str, str], ...] = ()

    @property
    def peer(self) -> bool:
        return self.family not in ("copy", "fastspike")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Provider":
        return cls(**{**d, "suites": tuple(d["suites"]), "env": tuple(tuple(e) for e in d["env"])})


def registry() -> List[Provider]:
    """Every provider this version knows, in table order: copy, fastspike's backends, then the peers."""
    both = ("neuron", "e2e", "memory")
    made = [Provider("copy", "copy", "clone", "x.clone() of the same tensor: the memory-bound floor",
                     suites=("copy",))]
    made += [Provider(f"fs-{b}", "fastspike", b, f"fastspike backend='{b}'", suites=both)
             for b in backends.BACKENDS]
    made += [
        Provider("sj014-torch", "sj014", "torch", "SpikingJelly 0.0.0.0.14 backend='torch'", suites=both),
        Provider("sj014-cupy", "sj014", "cupy", "SpikingJelly 0.0.0.0.14 backend='cupy' (numpy.int aliased "
                 "to int: numpy 2 removed it)", suites=both, cuda_only=True),
        Provider("sj2-auto", "sj2", "auto", "SpikingJelly 2.x as shipped (picks CUDA C++, Triton or torch)",
                 suites=both),
    ]
    for impl in ("triton", "torch"):
        made.append(Provider(f"sj2-{impl}", "sj2", impl, f"SpikingJelly 2.x, SJ_<NODE>_CUDA_IMPLEMENTATION={impl}",
                             cuda_only=True, env=tuple((var, impl) for var in SJ2_IMPLEMENTATION_VARS)))
    made += [
        Provider("snntorch", "snntorch", "leaky", "snnTorch Leaky, a Python loop over T (beta = 1 - 1/tau, "
                 "input not scaled by 1/tau)"),
        # Inductor's CPU kernels and ATen's OpenMP pool spin against each other on few cores (timings
        # jump to multiples of the 4 ms scheduler tick); passive waiting removes that. No effect on CUDA.
        Provider("compile", "compile", "loop", f"torch.compile'd reference loop (LIF, hard reset, "
                 f"T <= {COMPILE_MAX_T})",
                 env=(("OMP_WAIT_POLICY", "PASSIVE"),)),
    ]
    return made


def select(names: Optional[Sequence[str]], known: Sequence[Provider]) -> List[Provider]:
    """The providers named in ``names`` (ids, or a family such as 'fastspike', 'sj2', 'peers'), in registry
    order; None selects all. ``copy`` is always included: every ratio needs it. Unknown names raise
    ``ValueError`` listing the valid ones."""
    if names is None:
        return list(known)
    wanted = {"copy"}
    for name in names:
        hits = [p.id for p in known if name in (p.id, p.family) or (name == "peers" and p.peer)]
        if not hits:
            valid = sorted({p.id for p in known} | {p.family for p in known} | {"peers"})
            raise ValueError(f"unknown provider {name!r}; choose from {', '.join(valid)}")
        wanted.update(hits)
    return [p for p in known if p.id in wanted]


@dataclass(frozen=True)
class Location:
    """Where a family's packages come from: ``path`` (None: the current environment), the installed
    ``version`` ('unknown' for a source tree without metadata), or ``reason`` why the family cannot run."""

    family: str
    path: Optional[str]
    version: Optional[str]
    reason: Optional[str]


def _dist_version(name: str, path: Optional[Iterable[str]]) -> Optional[str]:
    search = list(path) if path is not None else list(sys.path)
    for dist in importlib.metadata.distributions(path=search):
        if re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "").lower()) == name:
            return dist.version
    return None


def _fits(family: str, version: str) -> bool:
    if version == "unknown" or family == "snntorch":
        return True
    major = version.split(".")[0]
    return major == "0" if family == "sj014" else major.isdigit() and int(major) >= 2


def locate(family: str, path: Optional[str] = None) -> Location:
    """Find ``family``'s packages in ``path`` (a directory for its ``PYTHONPATH``) or, without one, in
    the current environment, and check the version suits the family (0.x for sj014, 2.x or later for sj2)."""
    if family in LOCAL_FAMILIES:
        return Location(family, None, None, None)
    package, option = PEER_PACKAGES[family]
    if path is not None:
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            return Location(family, path, None, f"{option} {path}: no such directory")
        version = _dist_version(package, [path])
        if version is None:
            if not os.path.isdir(os.path.join(path, package)):
                return Location(family, path, None, f"{option} {path}: no {package} package there")
            version = "unknown"
    else:
        version = _dist_version(package, None)
        if version is None:
            return Location(family, None, None, f"{package} is not installed here; pass {option} PATH "
                                                f"(a directory holding it, e.g. pip install --target PATH)")
    if not _fits(family, version):
        want = "0.0.0.0.14" if family == "sj014" else "2.x"
        where = path if path is not None else "this environment"
        return Location(family, path, version, f"{package} {version} in {where} is not {want}; "
                                               f"pass {option} PATH with {package} {want}")
    return Location(family, path, version, None)


def locate_all(paths: Dict[str, Optional[str]]) -> Dict[str, Location]:
    """``locate`` every family; ``paths`` maps a peer family ('sj014', 'sj2', 'snntorch') to its directory."""
    families = list(LOCAL_FAMILIES) + list(PEER_PACKAGES)
    return {f: locate(f, paths.get(f)) for f in families}


def static_skip_reason(provider: Provider, location: Location, device: str) -> Optional[str]:
    """Why ``provider`` cannot run on ``device`` before any process starts (missing package, wrong version,
    CUDA-only provider on CPU), or None. Reasons that need an import are found by the worker."""
    if location.reason is not None:
        return location.reason
    if provider.cuda_only and device != "cuda":
        if provider.family == "sj2":
            return "forces a CUDA implementation; on CPU SpikingJelly 2 runs its CPU path (sj2-auto)"
        return "needs a CUDA device"
    if provider.family == "fastspike":
        # Workers inherit this environment (TRITON_INTERPRET included), so the answer here is theirs.
        return backends.unavailable_reason(provider.variant, device)
    return None


def job_skip_reason(provider: Provider, job) -> Optional[str]:
    """Why ``provider`` leaves out this :class:`~.suite.Job` by design (not for lack of a package), or None."""
    if job.suite == "neuron" and job.kind == "leaky" and provider.family not in ("fastspike", "snntorch"):
        return "snnTorch's Leaky: measured for fastspike.snntorch and snnTorch only"
    if provider.family == "compile" and job.suite == "neuron":
        if (job.kind, job.reset) != COMPILE_NEURON:
            return "compiled for LIF with hard reset only: each configuration compiles for tens of seconds"
        if job.shape[0] > COMPILE_MAX_T:
            return f"T={job.shape[0]} > {COMPILE_MAX_T}: the unrolled loop takes minutes to compile"
    return None


def group_key(provider: Provider, location: Location) -> Tuple[Optional[str], Tuple[Tuple[str, str], ...]]:
    """Providers with equal keys share one worker process: same import path, same environment."""
    return location.path, provider.env
