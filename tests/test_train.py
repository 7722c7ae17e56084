"""fastspike train / compare: datasets, a falling loss, exact resume, DDP with gloo, output files."""
import csv
import json
import os
import socket
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastspike import cli, data, models, train

# Small enough that one epoch over the 1437 training digits takes about a second on 2 cores.
TINY = ["--device", "cpu", "--channels", "2", "--epochs", "1"]


def _args(*argv):
    return cli.parse_args(["train", *argv])


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_short_training_run_loss_falls_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    cli.main(["train", *TINY, "--channels", "4", "--epochs", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.count("epoch ") >= 3 and "best test accuracy" in printed
    m = json.loads((out / "metrics.json").read_text())
    losses = [h["train_loss"] for h in m["history"]]
    assert losses[2] < losses[1] < losses[0]
    assert m["accuracy_unit"].startswith("fraction")
    assert m["best_test_acc"] == max(h["test_acc"] for h in m["history"]) > 0.5  # 10 classes: chance 0.1
    assert m["config"]["T"] == 4 and m["config"]["loss"] == "mse-rate" and m["epochs_done"] == 3
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["test_acc"]) == m["final_test_acc"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"checkpoint.pt", "best.pt"} <= set(os.listdir(out))


def test_resume_continues_exactly(tmp_path):
    # Poisson input draws from the global RNG at every step, so the resumed epoch matches only if the
    # checkpoint restores the RNG state, not just the weights, optimizer moments and shuffle order.
    poisson = [*TINY, "--encoder", "poisson"]
    _, whole = train.run(_args(*poisson, "--epochs", "2", "--out", str(tmp_path / "a")))
    train.run(_args(*poisson, "--out", str(tmp_path / "b")))
    model, resumed = train.run(_args(*poisson, "--epochs", "2", "--resume", "--out", str(tmp_path / "b")))
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert resumed["history"][1][key] == whole["history"][1][key], key
    saved = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in _params(model).items())
    with pytest.raises(SystemExit, match="no checkpoint"):
        cli.main(["train", *poisson, "--resume", "--out", str(tmp_path / "c")])


@pytest.mark.parametrize("argv, match", [
    (["--channels", "3"], "--channels: saved 2, now 3"),
    (["--batch-size", "16"], "--batch-size: saved 32, now 16"),
    (["--lr", "0.01", "--seed", "1"], "--lr: saved 0.001, now 0.01, --seed: saved 0, now 1"),
    (["--schedule", "const", "--amp"], "--schedule: saved 'cosine', now 'const', --amp: saved False, now True"),
    (["--momentum", "0.5"], "--momentum: saved 0.9, now 0.5"),
])
def test_resume_refuses_other_options(tmp_path, argv, match):
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"config": train._resolve(_args(*TINY), data.DataInfo("digits", (1, 28, 28), 10))}, ckpt)
    with pytest.raises(SystemExit, match=match):
        cli.main(["train", *TINY, *argv, "--resume", "--out", str(tmp_path)])


def _write_idx(path, array):
    """The IDX format of the MNIST files: zero, type 0x08 (uint8), rank, big-endian sizes, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_mnist_idx_files_load_without_network(tmp_path, monkeypatch):
    import urllib.request

    def no_network(*a, **k):
        raise AssertionError("tried to download")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in (("train", 40), ("t10k", 20))}
    labels = {s: np.arange(len(images[s])) % 10 for s in images}
    for s in images:
        _write_idx(raw / f"{s}-images-idx3-ubyte", images[s])
        _write_idx(raw / f"{s}-labels-idx1-ubyte", labels[s])
    tr, te, info = data.load("mnist", str(tmp_path))
    assert info.in_shape == (1, 28, 28) and info.classes == 10 and not info.frames
    assert len(tr) == 40 and len(te) == 20
    x, y = tr[7]
    assert x.shape == (1, 28, 28) and torch.allclose(x[0], torch.tensor(images["train"][7] / 255, dtype=torch.float32))
    assert y == 7
    _, m = train.run(_args(*TINY, "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")))
    assert m["epochs_done"] == 1 and 0 <= m["final_test_acc"] <= 1


def test_mnist_offline_and_missing_names_the_files_to_place(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("no network in this test")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    for name, folder in (("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")):
        with pytest.raises(OSError) as err:
            data.load(name, str(tmp_path))
        message = str(err.value)
        assert repr(os.path.join(str(tmp_path), folder, "raw")) in message, message
        assert all(f in message for f in data.IDX_FILES) and "no network in this test" in message
    with pytest.raises(SystemExit, match="MNIST/raw' and could not be downloaded"):
        cli.main(["train", *TINY, "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")])


def _write_dvs(root, per_class, T=2):
    rng = np.random.default_rng(0)
    for c in data.CIFAR10_DVS_CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            np.savez_compressed(root / c / f"{i}.npz", frames=rng.integers(0, 3, (T, 2, 8, 8)).astype(np.float32))


def test_cifar10_dvs_frames_folder(tmp_path):
    root = tmp_path / "frames"
    with pytest.raises(FileNotFoundError, match="frames_number_8_split_by_number"):
        data.load("cifar10-dvs", str(root))
    _write_dvs(root, per_class=10)
    tr, te, info = data.load("cifar10-dvs", str(root))
    assert (len(tr), len(te)) == (90, 10) and info.T == 2 and info.in_shape == (2, 8, 8)
    x, y = data.collate_time_major([tr[0], tr[50]])
    assert x.shape == (2, 2, 2, 8, 8) and y.tolist() == [0, 5]
    # --frame-size 4 averages each 2 x 2 block of the 8 x 8 frames.
    small_tr, _, small = data.load("cifar10-dvs", str(root), frame_size=4)
    assert small.in_shape == (2, 4, 4) and small.T == 2
    blocks = tr[3][0].reshape(2, 2, 4, 2, 4, 2).mean((3, 5))
    assert torch.allclose(small_tr[3][0], blocks) and small_tr[3][1] == tr[3][1]
    for model in ("dvs-csnn", "dvs-cnn"):
        trained, m = train.run(_args(*TINY, "--model", model, "--dataset", "cifar10-dvs", "--data-dir", str(root),
                                     "--frame-size", "4", "--workers", "0", "--batch-size", "16",
                                     "--out", str(tmp_path / model)))
        assert m["config"]["T"] == (2 if model == "dvs-csnn" else None) and m["epochs_done"] == 1
        assert m["config"]["frame_size"] == 4
        assert [l.in_features for l in trained.modules() if isinstance(l, torch.nn.Linear)] == [2 * 2 * 2]
    with pytest.raises(SystemExit, match="frame_size must be a positive integer, got 0"):
        cli.main(["train", *TINY, "--model", "dvs-csnn", "--dataset", "cifar10-dvs", "--data-dir", str(root),
                  "--frame-size", "0", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="runs over the 2 frames of each sample; got T=8"):
        cli.main(["train", *TINY, "--model", "dvs-csnn", "--dataset", "cifar10-dvs", "--data-dir", str(root),
                  "--T", "8", "--out", str(tmp_path / "x")])


@pytest.mark.parametrize("argv, match", [
    (["--model", "cnn", "--T", "4"], "has no T argument"),
    (["--model", "fc-snn", "--channels", "4"], "has no channels argument"),
    (["--model", "csnn", "--loss", "ce"], "does not apply to spiking model"),
    (["--model", "cnn", "--loss", "mse-rate"], "its loss is 'ce'"),
    (["--model", "csnn", "--loss", "ce-mem"], "does not return; models that do: mlp-snn"),
    (["--model", "dvs-csnn"], "takes event frames"),
    (["--backend", "triton"], "triton"),
    (["--momentum", "-0.5"], "--momentum must be >= 0, got -0.5"),
    (["--frame-size", "32"], "cifar10-dvs frames only"),
])
def test_train_rejects_bad_combinations(tmp_path, argv, match):
    with pytest.raises(SystemExit, match=match):
        cli.main(["train", "--device", "cpu", *argv, "--out", str(tmp_path)])


def test_parser_rejects_bad_values(capsys):
    for argv in (["--model", "resnet"], ["--dataset", "cifar100"], ["--T", "0"], ["--lr", "-1"]):
        with pytest.raises(SystemExit) as err:
            cli.main(["train", *argv])
        assert err.value.code == 2, argv
    assert "invalid choice: 'cifar100'" in capsys.readouterr().err


def test_failed_setup_destroys_the_process_group(tmp_path, monkeypatch):
    def one_process_group(device):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        return 0, 1, device, True
    monkeypatch.setattr(train, "_distributed", one_process_group)
    with pytest.raises(train.TrainError, match="does not apply to spiking model"):
        train.run(_args("--device", "cpu", "--loss", "ce", "--out", str(tmp_path)))
    assert not dist.is_initialized()


def test_torchrun_entry_point_parses():
    # torchrun runs `python -m fastspike.cli train ...`: the module must work as a script.
    done = subprocess.run([sys.executable, "-m", "fastspike.cli", "train", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--frame-size S" in done.stdout and "--resume" in done.stdout


def _ddp_worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model, metrics = train.run(_args(*TINY, "--batch-size", "64", "--out", out))
    torch.save({"params": _params(model), "metrics": metrics}, os.path.join(out, f"rank{rank}.pt"))


def test_ddp_two_gloo_processes_stay_in_sync(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
    torch.manual_seed(0)
    init = _params(models.build("csnn", (1, 28, 28), 10, channels=2))
    assert not torch.equal(init["net.0.weight"], r0["params"]["net.0.weight"]), "no training happened"
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["epochs_done"] == 1 and 0 < m["final_test_acc"] <= 1
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    for r in (r0, r1):  # the sums are reduced over both ranks
        assert [r["metrics"]["history"][0][k] for k in keys] == [m["history"][0][k] for k in keys]
    # Each rank takes half of the 1437 training digits: ceil(719 / 64) = 12 steps (one process: 23).
    assert r0["metrics"]["history"][0]["steps"] == r1["metrics"]["history"][0]["steps"] == 12


def test_compare_tabulates_snn_and_twin(tmp_path, capsys):
    cli.main(["compare", *TINY, "--out", str(tmp_path)])
    table = (tmp_path / "compare.md").read_text()
    assert table in capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| csnn") or line.startswith("| cnn")]
    assert len(rows) == 2
    for row, name in zip(rows, ("csnn", "cnn")):
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == name and float(cells[4]) == round(m["best_test_acc"], 4)
        assert float(cells[6]) == round(m["step_ms"], 2) > 0
    with pytest.raises(SystemExit) as err:
        cli.main(["compare", "--model", "fc-snn"])
    assert err.value.code == 2 and "invalid choice: 'fc-snn'" in capsys.readouterr().err


def test_seed004_mlp_snn_trains_on_membrane_potentials(tmp_path):
    # snnTorch's tutorial 5: loss on the output layer's mem at every step, accuracy from the spike counts.
    metrics = train.run(_args("--model", "mlp-snn", "--dataset", "digits", "--device", "cpu", "--epochs", "1",
                              "--T", "4", "--out", str(tmp_path)))[1]
    assert metrics["config"]["loss"] == "ce-mem" and metrics["history"][0]["train_loss"] > 0
    assert metrics["best_test_acc"] > 0.5
