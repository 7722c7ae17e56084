"""The fingerprint of the C++/CUDA sources, computed the same way by setup.py (baked into the build) and by
:mod:`fastspike.native` (compared at load time), so an extension built from other sources is reported as
stale instead of running old kernels. Standard library only: setup.py runs it before anything is built."""
import hashlib
import os

SUFFIXES = (".h", ".cpp", ".cu", ".cuh")


def source_hash(csrc_dir: str) -> str:
    """A short hex digest of every ``.h``/``.cpp``/``.cu``/``.cuh`` file under ``csrc_dir`` (names and contents)."""
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(csrc_dir)):
        for name in sorted(f for f in files if f.endswith(SUFFIXES)):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, csrc_dir).replace(os.sep, "/").encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]
