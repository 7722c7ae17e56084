"""Build script: metadata lives in pyproject.toml; this file adds the optional compiled extension.

``fastspike._C`` is built from csrc/:
- with CUDA kernels when a CUDA toolkit is found ($CUDA_HOME or $CUDA_PATH, else /usr/local/cuda, else the
  toolkit of the ``nvcc`` on PATH), for the architectures in $TORCH_CUDA_ARCH_LIST (default sm_80, sm_90
  and PTX for newer GPUs);
- CPU-only when there is no toolkit or FASTSPIKE_NO_CUDA=1;
- not at all (pure Python, backend 'torch' and 'triton' only) when FASTSPIKE_SKIP_BUILD=1, when torch
  is not importable at build time, or when no C++ compiler is found.
$MAX_JOBS bounds parallel compile jobs (ninja). The build records a hash of csrc/ so a stale build is
detected at run time (fastspike.native).
"""
import os
import re
import runpy
import shutil
import subprocess
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")


def note(msg):
    print(f"fastspike setup: {msg}", file=sys.stderr)


def find_cuda_home():
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        # The nvcc on PATH can be a wrapper script; the toolkit is where the real binary lives.
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in candidates:
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")) and \
                os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


def cuda_unusable(torch, cuda_home):
    """Why the toolkit at ``cuda_home`` cannot build kernels for this torch, or None."""
    if torch.version.hip is not None or torch.version.cuda is None:
        return f"torch {torch.__version__} is not a CUDA build"
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        return f"nvcc does not run ({err})"
    match = re.search(r"release (\d+)\.", out)
    if not match or match.group(1) != torch.version.cuda.split(".")[0]:
        return (f"the toolkit in {cuda_home} ({match.group(0) if match else 'unknown release'}) does not match "
                f"the CUDA {torch.version.cuda} torch was built with")
    return None


def arch_token(arch_list):
    """TORCH_CUDA_ARCH_LIST as one preprocessor token ('8.0;9.0+PTX' -> '80_90ptx') for fastspike._C."""
    entries = [a for a in re.split(r"[;\s]+", arch_list) if a]
    return "_".join(a.replace(".", "").replace("+PTX", "ptx") for a in entries)


def extension_kwargs():
    if os.environ.get("FASTSPIKE_SKIP_BUILD") == "1":
        note("FASTSPIKE_SKIP_BUILD=1: pure-Python install, no fastspike._C")
        return {}
    if not os.path.isdir(CSRC):
        return {}
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        note("no C++ compiler found: pure-Python install, no fastspike._C")
        return {}
    try:
        import torch
    except ImportError:
        note("torch is not importable at build time: pure-Python install, no fastspike._C")
        return {}
    cuda_home = None if os.environ.get("FASTSPIKE_NO_CUDA") == "1" else find_cuda_home()
    reason = cuda_unusable(torch, cuda_home) if cuda_home else None
    if reason:
        note(f"not building the CUDA kernels: {reason}")
        cuda_home = None
    if cuda_home:
        # torch.utils.cpp_extension reads these when imported.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    from torch.utils import cpp_extension

    digest = runpy.run_path(os.path.join(HERE, "fastspike", "_source_hash.py"))["source_hash"](CSRC)
    # A bare hex token, stringified in ops.cpp: quotes would not survive both ninja's shell and distutils.
    defines = [f"-DFASTSPIKE_SOURCE_HASH={digest}"]
    # No FMA contraction (it would change fp32 results); no trapping/errno semantics, which only block
    # vectorising the branch-free loops and never change a result.
    cxx = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]
    # Every op family adds its files to csrc/ (docs/adding-a-neuron.md); the build takes them all.
    sources = sorted(os.path.join("csrc", f) for f in os.listdir(CSRC) if f.endswith(".cpp"))
    if cuda_home:
        defines += ["-DFASTSPIKE_WITH_CUDA", f"-DFASTSPIKE_CUDA_ARCHS={arch_token(os.environ['TORCH_CUDA_ARCH_LIST'])}"]
        sources += sorted(os.path.join("csrc", f) for f in os.listdir(CSRC) if f.endswith(".cu"))
        include_dirs = []
        # ATen's CUDA headers want cuBLAS/cuSPARSE headers, which a bare toolkit may lack but torch's
        # nvidia-* wheels ship.
        try:
            import nvidia
            include_dirs += [os.path.join(p, "cu13", "include") for p in nvidia.__path__
                             if os.path.isdir(os.path.join(p, "cu13", "include"))]
        except ImportError:
            pass
        ext = cpp_extension.CUDAExtension(
            "fastspike._C", sources, include_dirs=include_dirs, extra_link_args=["-fopenmp"],
            extra_compile_args={"cxx": cxx + defines, "nvcc": ["-O3", "-fmad=false"] + defines})
        note(f"building fastspike._C with CUDA ({cuda_home}, archs {os.environ['TORCH_CUDA_ARCH_LIST']})")
    else:
        ext = cpp_extension.CppExtension("fastspike._C", sources, extra_link_args=["-fopenmp"],
                                         extra_compile_args={"cxx": cxx + defines})
        note("building fastspike._C for CPU only (no CUDA toolkit found)")
    use_ninja = shutil.which("ninja") is not None
    return {"ext_modules": [ext],
            "cmdclass": {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=use_ninja)}}


setup(**extension_kwargs())
