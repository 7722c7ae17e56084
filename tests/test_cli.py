"""The `fastspike demo` command (README's main job) and its synthetic data."""
import pytest
import torch

from fastspike import cli


def test_bars_have_four_balanced_orientations():
    images, labels = cli.make_bars(400, torch.Generator().manual_seed(0))
    assert images.shape == (400, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    counts = torch.bincount(labels, minlength=4)
    assert counts.min() > 60, counts
    # A horizontal bar (label 0) concentrates its ink in few rows; a vertical one (label 1) in few columns.
    h, v = images[labels == 0][:, 0].gt(0.9), images[labels == 1][:, 0].gt(0.9)
    assert h.any(2).sum(1).float().mean() < 4 and v.any(1).sum(1).float().mean() < 4


def test_demo_trains_and_matches_spikingjelly(capsys):
    cli.main(["demo", "--device", "cpu", "--steps", "30", "--channels", "4", "--seed", "1"])
    out = capsys.readouterr().out
    assert "bit-identical: True" in out
    assert int(out.split(" spikes) bit-identical")[0].split("(")[-1]) > 100, out
    acc = float(out.split("test accuracy on 512 held-out images: ")[1].split()[0])
    assert acc > 0.5, out  # 4 classes: chance is 0.25


def test_demo_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--steps", "0"])
    with pytest.raises(SystemExit, match="fastspike demo: backend='triton' is not available"):
        cli.main(["demo", "--device", "cpu", "--backend", "triton"])
