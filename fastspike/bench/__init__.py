"""``fastspike bench``: fastspike's backends against SpikingJelly, snnTorch and torch.compile, one run.

Pieces (each usable on its own):

- :mod:`.suite`: the shape sweep and the jobs a run measures (``--quick`` CPU set, full CUDA grid).
- :mod:`.providers`: who is measured (every fastspike backend, the peers), where each one's packages
  live (its own subprocess import path), and why one is skipped.
- :mod:`.worker`: ``python -m fastspike.bench.worker`` runs one provider group's measurements in its own
  process (SpikingJelly 0.0.0.0.14 and 2.x cannot share one) and streams JSON rows.
- :mod:`.runner`: starts the workers, survives their crashes, shows progress, collects the rows.
- :mod:`.timing`: ``triton.testing.do_bench`` medians on CUDA, repeat-and-median on CPU, memory.
- :mod:`.report`: ``results.csv`` and ``results.md`` (timing, roofline, memory, end-to-end); :mod:`.plots`: PNGs.
- :mod:`.cli`: the ``fastspike bench`` subcommand.

Tensors are time-major ``[T, N, *]`` throughout, as in fastspike's multi-step mode.
"""
