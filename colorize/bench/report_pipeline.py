"""The original report's training pipeline, rebuilt faithfully as the baseline of the
benchmarks: a per-item dataset that makes a PIL image per sample, flips it and converts it
with scikit-image's ``rgb2lab``, a ``DataLoader`` with one worker per core, fp32, and the
report's network as its code ran it (the encoder run twice, a softmax before the cross-entropy)."""
import os
import time
from pathlib import Path
from typing import Dict, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from colorize.bench.machine import synchronize
from colorize.core.color import lab_to_rgb, normalize_l
from colorize.core.images import rgb_to_uint8
from colorize.data.loaders import MemoryLoader, build_loaders, decode_lab
from colorize.data.manifest import read_manifest
from colorize.models.base import gflop_per_image
from colorize.models.fusion import FusionColorizer
from colorize.models.prediction import Prediction
from colorize.settings import DataConfig


class PerItemLabDataset(Dataset):
    """The report's input pipeline: uint8 images in memory, converted one sample at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        from skimage.color import rgb2lab
        from torchvision.transforms import functional

        image = Image.fromarray(self.images[i])
        if torch.rand(1).item() < 0.5:
            image = functional.hflip(image)
        lab = torch.from_numpy(rgb2lab(np.asarray(image)).astype(np.float32)).permute(2, 0, 1)
        return lab[:1], lab[1:], int(self.labels[i])


def stored_rgb(loader: MemoryLoader) -> np.ndarray:
    """The split a memory loader holds, as (N, R, R, 3) uint8 RGB images."""
    return rgb_to_uint8(lab_to_rgb(decode_lab(loader.lab, loader.spec.storage_dtype)))


class ReportColorizer(FusionColorizer):
    """The fusion network as the report's code ran it: the encoder twice per forward pass, raw
    ab out, and class probabilities (batch-normalized scores through a softmax) for the loss."""

    def __init__(self, num_classes: int, resolution: int):
        super().__init__(num_classes=num_classes, resolution=resolution)
        self.classifier = nn.Sequential(self.classifier, nn.BatchNorm1d(num_classes), nn.Softmax(dim=1))

    def forward(self, l: torch.Tensor):
        mid = self.mid(self.encoder(normalize_l(l)))
        summary = self.global_features(self.encoder(normalize_l(l)))
        tiled = summary[:, :, None, None].expand(-1, -1, *mid.shape[-2:])
        return Prediction(self.decoder(self.fusion(torch.cat((mid, tiled), dim=1))), self.classifier(summary))


def _forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def report_pipeline(data_dir: Path, steps: int, batch_size: int, device: torch.device) -> Dict:
    """The report's pipeline: ``steps`` timed batches after ``steps`` warm-up ones."""
    manifest = read_manifest(data_dir)
    data = DataConfig(dir=str(data_dir), loader="memory", batch_size=batch_size, train_limit=2 * steps * batch_size)
    memory = build_loaders(data, splits=("train",))["train"]
    loader = DataLoader(PerItemLabDataset(stored_rgb(memory), memory.labels.numpy()), batch_size=batch_size,
                        shuffle=True, drop_last=True, num_workers=os.cpu_count(), persistent_workers=True)
    model = ReportColorizer(len(manifest["classes"]), manifest["resolution"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = _forever(loader)
    images, wait = 0, 0.0
    for index in range(2 * steps):
        if index == steps:
            synchronize(device)
            start = time.perf_counter()
        waited = time.perf_counter()
        l, ab, label = (t.to(device) for t in next(batches))
        waited = time.perf_counter() - waited
        prediction = model(l)  # raw ab and class probabilities, as the report's code had them
        (F.smooth_l1_loss(prediction.ab, ab) + F.cross_entropy(prediction.logits, label)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= steps:
            images, wait = images + len(l), wait + waited
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"precision": "fp32", "captured": False, "processes": 1, "images_per_s": images / seconds,
            "data_wait_fraction": wait / seconds,
            "gflop_per_image": gflop_per_image(ReportColorizer(len(manifest["classes"]), manifest["resolution"]),
                                               manifest["resolution"])}
