"""``fastspike`` command line.

``fastspike demo``: trains the seeds' CSNN topology (conv3x3-BN-IF-maxpool x2, Linear-IF, Linear-IF) on a
synthetic oriented-bars task on the chosen device and, when SpikingJelly is installed, checks that the same
network built with SpikingJelly and converted by :func:`fastspike.from_spikingjelly` gives bit-identical
outputs and compares the time of a training step side by side.

``fastspike train``: trains one of the seeds' models (:mod:`fastspike.models`) on digits, MNIST,
Fashion-MNIST or CIFAR10-DVS frames, with checkpoints and curves (:mod:`fastspike.train`).

``fastspike compare``: trains an SNN and its non-spiking twin on the same data and tabulates accuracy and
time per training step (:mod:`fastspike.compare`).

``fastspike bench``: times every available fastspike backend against SpikingJelly, snnTorch and a
torch.compile'd loop, with copy-bandwidth roofline columns, memory and plots (:mod:`fastspike.bench`).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings

import torch
from torch import nn

from . import __version__, backends, from_spikingjelly, functional, layer, neuron, surrogate


def make_bars(n: int, generator: torch.Generator, size: int = 28):
    """``n`` noisy 1 x size x size images of a bar in one of 4 orientations (the label) at a random offset."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    offsets = torch.randint(-8, 9, (n,), generator=generator)
    r = torch.arange(size)
    rows, cols = r.view(-1, 1).expand(size, size), r.view(1, -1).expand(size, size)
    c = size // 2
    images = torch.empty(n, 1, size, size)
    for i, (label, off) in enumerate(zip(labels.tolist(), offsets.tolist())):
        dist = [rows - c - off, cols - c - off, rows - cols - off, rows + cols - 2 * c - off][label]
        images[i, 0] = (dist.abs() <= 1).float()
    images += 0.3 * torch.rand(images.shape, generator=generator)
    return images.clamp_(0, 1), labels


def csnn(channels: int, classes: int, node_module=neuron, layer_module=layer, sg=None) -> nn.Sequential:
    """The seeds' CSNN for 28 x 28 inputs, from ``node_module``'s IFNode and ``layer_module``'s layers
    (fastspike's, or SpikingJelly's ``activation_based.neuron`` and ``.layer``)."""
    sg = sg if sg is not None else surrogate.ATan()
    layer = layer_module
    return nn.Sequential(
        layer.Conv2d(1, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels),
        node_module.IFNode(surrogate_function=sg), layer.MaxPool2d(2),
        layer.Conv2d(channels, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels),
        node_module.IFNode(surrogate_function=sg), layer.MaxPool2d(2),
        layer.Flatten(), layer.Linear(channels * 49, channels * 16, bias=False),
        node_module.IFNode(surrogate_function=sg),
        layer.Linear(channels * 16, classes, bias=False), node_module.IFNode(surrogate_function=sg))


def _train_step(net, opt, images, labels, T):
    rate = net(images.unsqueeze(0).expand(T, *images.shape)).mean(0)
    loss = nn.functional.mse_loss(rate, nn.functional.one_hot(labels, rate.shape[1]).float())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    functional.reset_net(net)
    return loss.item(), (rate.argmax(1) == labels).float().mean().item()


def _step_time(net, images, labels, T, device, repeats=5):
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    _train_step(net, opt, images, labels, T)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _train_step(net, opt, images, labels, T)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _neuron_trace(net: nn.Sequential, x: torch.Tensor):
    """Every neuron layer's spikes and final v, and the parameter gradients, of one forward+backward."""
    nodes = [m for m in net if hasattr(m, "v_threshold")]
    spikes = []
    hooks = [m.register_forward_hook(lambda _m, _inp, out: spikes.append(out.detach())) for m in nodes]
    net(x).sum().backward()
    for h in hooks:
        h.remove()
    vs = [m.v.detach() for m in nodes]
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    functional.reset_net(net)
    return spikes, vs, grads


def _compare_with_spikingjelly(args, device, images, labels):
    try:
        with warnings.catch_warnings():  # SpikingJelly 0.0.0.0.14 uses the deprecated torch.jit.script
            warnings.simplefilter("ignore", FutureWarning)
            from spikingjelly.activation_based import layer as sj_layer
            from spikingjelly.activation_based import neuron as sj_neuron
            from spikingjelly.activation_based import surrogate as sj_surrogate
    except ImportError:
        print("SpikingJelly not installed: skipping the side-by-side check (pip install spikingjelly==0.0.0.0.14)")
        return
    torch.manual_seed(args.seed)
    sj_net = csnn(args.channels, 4, node_module=sj_neuron, layer_module=sj_layer, sg=sj_surrogate.ATan()).to(device)
    functional.set_step_mode(sj_net, "m")
    fs_net = from_spikingjelly(copy.deepcopy(sj_net), backend=args.backend)
    x = images[: args.batch_size].unsqueeze(0).expand(args.T, -1, -1, -1, -1)
    (sj_s, sj_v, sj_g), (fs_s, fs_v, fs_g) = _neuron_trace(sj_net, x), _neuron_trace(fs_net, x)
    same = all(torch.equal(a, b) for a, b in zip(sj_s + sj_v, fs_s + fs_v))
    n_spikes = int(sum(s.sum().item() for s in sj_s))
    grad_err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(fs_g, sj_g))
    print(f"SpikingJelly CSNN converted with from_spikingjelly: spikes and v of all {len(sj_s)} neuron layers "
          f"({n_spikes} spikes) bit-identical: {same}; parameter gradients differ by at most "
          f"{grad_err:.1e} of their scale")
    if not same or n_spikes == 0 or not grad_err <= 1e-5:
        raise SystemExit("fastspike and SpikingJelly disagree (or nothing fired): see the line above")
    batch = images[: args.batch_size], labels[: args.batch_size]
    t_sj = _step_time(sj_net, *batch, args.T, device)
    t_fs = _step_time(fs_net, *batch, args.T, device)
    print(f"training step (B={args.batch_size}, T={args.T}, C={args.channels}) on {device}: "
          f"SpikingJelly torch {t_sj * 1e3:.1f} ms, fastspike {t_fs * 1e3:.1f} ms")


def demo(args) -> None:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("fastspike demo: --device cuda, but PyTorch sees no CUDA device")
    try:
        chosen = backends.resolve(args.backend, device)
    except (backends.BackendUnavailableError, ValueError) as err:
        raise SystemExit(f"fastspike demo: {err}") from None
    print(f"fastspike {__version__}, torch {torch.__version__}, device {device}, backend "
          f"{args.backend!r} -> {chosen!r}")
    g = torch.Generator().manual_seed(args.seed)
    train_x, train_y = make_bars(args.batch_size * args.steps, g)
    test_x, test_y = make_bars(512, g)
    torch.manual_seed(args.seed)
    net = csnn(args.channels, 4).to(device)
    functional.set_step_mode(net, "m")
    functional.set_backend(net, args.backend)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    # A redrawn one-line bar on a terminal; in a log, a line every tenth of the run.
    tty, every = sys.stdout.isatty(), max(1, args.steps // 10)
    for step in range(args.steps):
        sl = slice(step * args.batch_size, (step + 1) * args.batch_size)
        loss, acc = _train_step(net, opt, train_x[sl].to(device), train_y[sl].to(device), args.T)
        if tty or (step + 1) % every == 0 or step + 1 == args.steps:
            bar = "#" * int(30 * (step + 1) / args.steps)
            print(f"{chr(13) if tty else ''}train [{bar:<30}] {step + 1}/{args.steps} loss {loss:.4f} "
                  f"acc {acc:.3f}", end="" if tty else "\n", flush=True)
    print(f"{'  ' if tty else ''}training took {time.perf_counter() - t0:.1f} s")
    net.eval()
    with torch.no_grad():
        rate = net(test_x.to(device).unsqueeze(0).expand(args.T, -1, -1, -1, -1)).mean(0)
    functional.reset_net(net)
    test_acc = (rate.argmax(1).cpu() == test_y).float().mean().item()
    print(f"test accuracy on {len(test_y)} held-out images: {test_acc:.3f}")
    _compare_with_spikingjelly(args, device, train_x.to(device), train_y.to(device))


def _training_options(p: argparse.ArgumentParser, compare: bool) -> None:
    """The options ``train`` and ``compare`` share; None defaults mean "the model's default"."""
    from . import data, encoding, models, train
    names = [n for n, m in models.MODELS.items() if m.twin] if compare else list(models.MODELS)
    listing = "; ".join(f"{n}: {models.MODELS[n].about}" for n in names)
    p.add_argument("--model", default="csnn", choices=names, metavar="MODEL",
                   help=f"{'the SNN (its twin is trained too)' if compare else 'model'}, default csnn; {listing}")
    p.add_argument("--dataset", default="digits", choices=data.DATASETS,
                   help="digits (scikit-learn's, no download; default), mnist, fashion-mnist (torchvision, "
                        "downloaded into --data-dir), cifar10-dvs (frames in --data-dir, see docs/training.md)")
    p.add_argument("--data-dir", default="data", help="torchvision's root, or the cifar10-dvs frames folder "
                                                      "(default ./data)")
    p.add_argument("--frame-size", type=int, metavar="S",
                   help="cifar10-dvs only: average-pool the frames to S x S (default: as stored, 128 for "
                        "SpikingJelly's; seed 001 used 32)")
    p.add_argument("--T", type=int, help="time steps (spiking models; default: the model's, csnn 4)")
    p.add_argument("--channels", type=int, help="conv width of csnn/cnn/dvs-* (default 32, dvs 64)")
    p.add_argument("--encoder", choices=list(encoding.ENCODERS),
                   help="input encoding of spiking image models (default: the model's, csnn direct)")
    p.add_argument("--loss", choices=list(encoding.LOSSES) + ["ce"],
                   help="SNNs: mse-rate, ce-step (snnTorch's ce_rate_loss), ce-rate (CE of the mean firing "
                        "rate), ce-count; ANNs: ce (default: the model's)")
    p.add_argument("--epochs", type=int, default=12, help="default 12")
    p.add_argument("--batch-size", type=int, default=32, help="per process (default 32)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the model's, csnn 1e-3)")
    p.add_argument("--opt", choices=train.OPTIMIZERS, help="optimizer (default: the model's, csnn adam)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum, >= 0 (default 0.9)")
    p.add_argument("--schedule", choices=("cosine", "const"), default="cosine",
                   help="learning rate over the epochs (default cosine)")
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--backend", default="auto", help="neuron backend: auto | torch | triton | native")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when available); under torchrun, cuda:LOCAL_RANK")
    p.add_argument("--seed", type=int, default=0, help="initialisation, shuffling and encoder seed (default 0)")
    p.add_argument("--workers", type=int, help="DataLoader workers (default 0; cifar10-dvs up to 4)")
    p.add_argument("--out", help="output folder (default runs/[compare-]MODEL-DATASET)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastspike", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train a small CSNN and compare with SpikingJelly")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", default="auto", help="auto | torch | triton | native (aliases cupy, cuda)")
    p.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--T", type=int, default=4, help="time steps (default 4)")
    p.add_argument("--channels", type=int, default=8, help="CSNN channels (default 8; the seeds use 128)")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    for name, compare, text in (
            ("train", False, "train a seed model; writes metrics.json, log.csv, curves.png, checkpoints"),
            ("compare", True, "train an SNN and its ANN twin on the same data; table of accuracy and step time")):
        _training_options(sub.add_parser(name, help=text, description=text), compare)
    from .bench import cli as bench_cli
    bench_cli.add_parser(sub)
    return parser


def _check_training_args(parser, args) -> None:
    for name in ("T", "channels", "epochs", "batch_size", "workers"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "workers" else 1):
            parser.error(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'workers' else 'positive'}, "
                         f"got {value}")
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.out is None:
        args.out = os.path.join("runs", f"{'compare-' if args.command == 'compare' else ''}{args.model}-"
                                        f"{args.dataset}")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check a command line (without the program name); exits with usage on bad values."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.steps < 1 or args.batch_size < 1 or args.T < 1 or args.channels < 1:
            parser.error("--steps, --batch-size, --T and --channels must be positive")
    elif args.command in ("train", "compare"):
        _check_training_args(parser, args)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "demo":
        demo(args)
        return
    if args.command == "bench":
        from .bench import cli as bench_cli
        raise SystemExit(bench_cli.run(args))
    from . import compare, train
    try:
        (train.run if args.command == "train" else compare.run)(args)
    except train.TrainError as err:
        raise SystemExit(f"fastspike {args.command}: {err}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
