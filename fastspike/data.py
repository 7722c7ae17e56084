"""Datasets of ``fastspike train``: each loader returns ``(train, test, info)``.

- ``digits``: scikit-learn's bundled 8 x 8 handwritten digits (1797 images, no download), scaled to [0, 1]
  and resized bilinearly to 28 x 28; a fixed split (seed 0, independent of the training seed) keeps 360
  images for testing and 1437 for training.
- ``mnist``, ``fashion-mnist``: torchvision's datasets under ``root`` (``root/MNIST/raw``,
  ``root/FashionMNIST/raw``), downloaded by torchvision when missing; the official 60k/10k split, pixels
  in [0, 1]. Offline, place the four IDX files (:data:`IDX_FILES`, or their ``.gz``) in that folder.
- ``cifar10-dvs``: event frames already integrated into ``.npz`` files, each holding an array ``frames``
  ``[T, 2, H, W]`` (SpikingJelly's ``frames_number_T_split_by_number`` folders have this layout):
  ``root/<class>/*.npz`` for the 10 classes (the first 90% of each class's files in name order train,
  the rest test, as SpikingJelly's ``split_to_train_test_set``), or ``root/train/<class>/*.npz`` and
  ``root/test/<class>/*.npz`` for a split made elsewhere. ``frame_size=S`` resizes every frame to
  ``S x S`` by adaptive average pooling (each output pixel is the mean of the input block it covers);
  SpikingJelly writes 128 x 128 frames.

Image samples are ``([C, H, W] float32, label)``; frame samples are ``([T, 2, H, W] float32, label)`` and
are batched time-major, ``[T, N, 2, H, W]``, by :func:`collate_time_major`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

__all__ = ["DATASETS", "DataInfo", "load", "load_digits", "load_torchvision", "load_cifar10_dvs",
           "FrameFolder", "collate_time_major", "CIFAR10_DVS_CLASSES", "IDX_FILES"]

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10-dvs")
# The files torchvision's MNIST and FashionMNIST read from root/<MNIST or FashionMNIST>/raw.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a dataset: the shape of one step ``(C, H, W)``, the number of
    classes, and for event data the frames per sample ``T`` (None for static images)."""

    name: str
    in_shape: tuple
    classes: int
    T: Optional[int] = None

    @property
    def frames(self) -> bool:
        return self.T is not None


def load(name: str, root: str = "data", frame_size: Optional[int] = None):
    """``(train, test, info)`` of the dataset ``name`` (one of :data:`DATASETS`); ``root`` is where
    torchvision keeps MNIST/Fashion-MNIST, or the CIFAR10-DVS frames folder. ``frame_size`` (cifar10-dvs
    only; default None keeps the files' size) resizes the frames to ``frame_size x frame_size``."""
    if frame_size is not None and name != "cifar10-dvs":
        raise ValueError(f"frame_size resizes cifar10-dvs frames only; dataset {name!r} got {frame_size}")
    if name == "digits":
        return load_digits()
    if name in ("mnist", "fashion-mnist"):
        return load_torchvision(name, root)
    if name == "cifar10-dvs":
        return load_cifar10_dvs(root, frame_size=frame_size)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def load_digits(size: int = 28, n_test: int = 360, split_seed: int = 0):
    """scikit-learn's digits as ``[1, size, size]`` images in [0, 1]; see the module docstring."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install scikit-learn") from None
    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    test, train = perm[:n_test], perm[n_test:]
    return (TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test]),
            DataInfo("digits", (1, size, size), 10))


def load_torchvision(name: str, root: str):
    """MNIST or Fashion-MNIST through torchvision (downloading into ``root`` when the files are missing),
    held in memory as ``[N, 1, 28, 28]`` float tensors in [0, 1]. Raises OSError naming the folder and
    files to provide when they are missing and cannot be downloaded."""
    try:
        from torchvision import datasets
    except ImportError:
        raise ImportError(f"the {name!r} dataset needs torchvision: pip install torchvision") from None
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    splits = []
    for train in (True, False):
        try:
            ds = cls(root, train=train, download=True)
        except RuntimeError as err:  # torchvision's report that every mirror failed
            raw = os.path.join(root, cls.__name__, "raw")
            raise OSError(f"{name}: the files are not in {raw!r} and could not be downloaded; without "
                          f"network, place {', '.join(IDX_FILES)} (or the same names with .gz) there. "
                          f"torchvision said: {str(err).strip()}") from err
        splits.append(TensorDataset(ds.data.unsqueeze(1).float().div_(255), ds.targets.long()))
    return splits[0], splits[1], DataInfo(name, (1, 28, 28), 10)


_DVS_LAYOUT = (f"ROOT/<class>/*.npz (classes {', '.join(CIFAR10_DVS_CLASSES)}) or ROOT/train/<class>/*.npz "
               f"and ROOT/test/<class>/*.npz, each file holding an array 'frames' [T, 2, H, W], e.g. "
               f"SpikingJelly's frames_number_8_split_by_number folder")


class FrameFolder(Dataset):
    """``(frames [T, C, H, W] float32, label)`` read from ``.npz`` files on access (CIFAR10-DVS does not fit
    in memory as floats: 10k samples of 8 x 2 x 128 x 128). ``files`` are ``(path, label)`` pairs;
    ``frame_size=S`` average-pools each frame to ``S x S`` (default None: as stored)."""

    def __init__(self, files: list, frame_size: Optional[int] = None):
        self.files, self.frame_size = files, frame_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import numpy as np
        path, label = self.files[i]
        with np.load(path) as f:
            if "frames" not in f:
                raise KeyError(f"{path}: no array named 'frames' (expected layout: {_DVS_LAYOUT})")
            frames = torch.from_numpy(f["frames"].astype("float32"))
        if self.frame_size is not None and frames.dim() == 4:  # load_cifar10_dvs reports other shapes
            frames = F.adaptive_avg_pool2d(frames, self.frame_size)
        return frames, label


def _class_files(folder: str, what: str) -> list:
    missing = [c for c in CIFAR10_DVS_CLASSES if not os.path.isdir(os.path.join(folder, c))]
    if missing:
        raise FileNotFoundError(f"cifar10-dvs: {what} {folder!r} lacks the class folders {missing}; "
                                f"expected {_DVS_LAYOUT}")
    per_class = []
    for label, c in enumerate(CIFAR10_DVS_CLASSES):
        names = sorted(n for n in os.listdir(os.path.join(folder, c)) if n.endswith(".npz"))
        if not names:
            raise FileNotFoundError(f"cifar10-dvs: no .npz files in {os.path.join(folder, c)!r}; "
                                    f"expected {_DVS_LAYOUT}")
        per_class.append([(os.path.join(folder, c, n), label) for n in names])
    return per_class


def load_cifar10_dvs(root: str, train_fraction: float = 0.9, frame_size: Optional[int] = None):
    """CIFAR10-DVS frames from ``root``, resized to ``frame_size x frame_size`` when given; see the module
    docstring for the folder layout and split."""
    if frame_size is not None and (isinstance(frame_size, bool) or not isinstance(frame_size, int)
                                   or frame_size < 1):
        raise ValueError(f"cifar10-dvs: frame_size must be a positive integer, got {frame_size!r}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"cifar10-dvs: frames folder {root!r} not found (set --data-dir); "
                                f"expected {_DVS_LAYOUT}")
    if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
        train = sum(_class_files(os.path.join(root, "train"), "folder"), [])
        test = sum(_class_files(os.path.join(root, "test"), "folder"), [])
    else:
        train, test = [], []
        for files in _class_files(root, "folder"):
            k = int(len(files) * train_fraction)
            train += files[:k]
            test += files[k:]
    train_ds, test_ds = FrameFolder(train, frame_size), FrameFolder(test, frame_size)
    frames = train_ds[0][0]
    if frames.dim() != 4:
        raise ValueError(f"cifar10-dvs: {train[0][0]!r} holds frames of shape {tuple(frames.shape)}; "
                         f"expected [T, 2, H, W]")
    return train_ds, test_ds, DataInfo("cifar10-dvs", tuple(frames.shape[1:]), len(CIFAR10_DVS_CLASSES),
                                       frames.shape[0])


def collate_time_major(batch):
    """Batch ``(frames [T, *], label)`` samples into ``([T, N, *], labels [N])``."""
    xs, ys = zip(*batch)
    return torch.stack(xs, 1), torch.tensor(ys, dtype=torch.long)
