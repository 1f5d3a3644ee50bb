"""Loss, metrics and early stopping."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from colorize.core.color import join_lab, lab_to_rgb
from colorize.core.metrics import MetricSums, colorfulness, psnr
from colorize.data.loaders import build_loaders
from colorize.engine.early_stopping import EarlyStopping
from colorize.losses import HuberClassLoss, HuberClassSettings
from colorize.models import Prediction
from colorize.settings import DataConfig


def test_loss_is_huber_plus_weighted_cross_entropy():
    torch.manual_seed(0)
    pred, true = torch.randn(2, 2, 4, 4) * 5, torch.randn(2, 2, 4, 4) * 5
    logits, labels = torch.randn(2, 10), torch.tensor([1, 7])
    loss = HuberClassLoss(HuberClassSettings(huber_delta=2.0, class_weight=0.5))
    parts = loss(Prediction(pred, logits), SimpleNamespace(ab=true, label=labels))
    assert torch.isclose(parts["color"], F.huber_loss(pred, true, delta=2.0))
    assert torch.isclose(parts["class"], F.cross_entropy(logits, labels))
    assert torch.isclose(parts["total"], parts["color"] + 0.5 * parts["class"])


def test_huber_delta_is_in_ab_units():
    zero = torch.zeros(1, 2, 1, 1)
    small, large = torch.full_like(zero, 0.5), torch.full_like(zero, 3.0)
    loss, logits = HuberClassLoss(HuberClassSettings()), torch.zeros(1, 2)
    batch = SimpleNamespace(ab=zero, label=torch.tensor([0]))
    assert loss(Prediction(small, logits), batch)["color"].item() == pytest.approx(0.125)
    assert loss(Prediction(large, logits), batch)["color"].item() == pytest.approx(2.5)


def test_colorfulness_of_grey_is_zero_and_grows_with_saturation():
    grey = torch.full((1, 3, 8, 8), 0.5)
    assert colorfulness(grey).item() == pytest.approx(0.0, abs=1e-4)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0
    half = red * 0.5 + 0.25
    assert colorfulness(red).item() > colorfulness(half).item() > 0
    # Hasler-Suesstrunk for a uniform image: 0.3 * sqrt(rg^2 + yb^2); pure red: rg=255, yb=127.5
    assert colorfulness(red).item() == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-5)


def test_psnr_of_known_error():
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a + 0.1, a).item() == pytest.approx(20.0, rel=1e-5)


def test_metric_sums_ignore_padding_and_match_direct_computation():
    torch.manual_seed(1)
    l = torch.rand(6, 1, 8, 8) * 100
    true, pred = torch.randn(6, 2, 8, 8) * 10, torch.randn(6, 2, 8, 8) * 10
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    valid = torch.tensor([True, True, True, True, False, False])
    padded = MetricSums(torch.device("cpu"))
    padded.update(l, pred, true, logits, labels, valid)
    exact = MetricSums(torch.device("cpu"))
    exact.update(l[:4], pred[:4], true[:4], logits[:4], labels[:4])
    assert padded.compute() == exact.compute()
    metrics = exact.compute()
    assert metrics["images"] == 4
    assert metrics["ab_l1"] == pytest.approx((pred[:4] - true[:4]).abs().mean().item(), rel=1e-6)
    assert metrics["accuracy"] == pytest.approx((logits[:4].argmax(1) == labels[:4]).float().mean().item())
    rgb = lab_to_rgb(join_lab(l[:4], pred[:4]))
    assert metrics["colorfulness_pred"] == pytest.approx(colorfulness(rgb).mean().item(), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_metrics_are_the_same_under_autocast(dtype):
    torch.manual_seed(2)
    l = torch.rand(16, 1, 16, 16) * 100
    true, pred = torch.randn(16, 2, 16, 16) * 20, torch.randn(16, 2, 16, 16) * 20
    logits, labels = torch.randn(16, 10), torch.arange(16) % 10
    plain = MetricSums(torch.device("cpu"))
    plain.update(l, pred, true, logits, labels)
    mixed = MetricSums(torch.device("cpu"))
    with torch.autocast("cpu", dtype=dtype):
        mixed.update(l, pred, true, logits, labels)
    assert mixed.compute() == plain.compute()


def test_reduce_is_applied_to_the_sums():
    sums = MetricSums(torch.device("cpu"))
    l, ab = torch.full((2, 1, 4, 4), 50.0), torch.ones(2, 2, 4, 4)
    sums.update(l, ab * 0, ab, torch.zeros(2, 2), torch.tensor([0, 1]))
    doubled = sums.compute(lambda t: t * 2)
    assert doubled["images"] == 4 and doubled["ab_l1"] == pytest.approx(1.0)


@pytest.mark.slow
def test_grey_baseline_on_the_shared_test_split_is_9_07(cifar_dir):
    sums = MetricSums(torch.device("cpu"))
    for batch in build_loaders(DataConfig(dir=str(cifar_dir), batch_size=1000), splits=("test",))["test"]:
        sums.update(batch.l, torch.zeros_like(batch.ab), batch.ab, torch.zeros(len(batch.l), 10),
                    batch.label)
    metrics = sums.compute()
    assert metrics["images"] == 10000
    assert metrics["ab_l1"] == pytest.approx(9.07, abs=0.01)
    assert metrics["colorfulness_pred"] == pytest.approx(0.0, abs=0.1)


def test_early_stopping_counts_epochs_without_improvement():
    stopper = EarlyStopping(patience=2, min_delta=0.1)
    decisions = []
    for epoch, value in enumerate([10.0, 9.0, 8.95, 9.5], start=1):
        improved = stopper.update(value, epoch)
        decisions.append((improved, stopper.should_stop))
    assert decisions == [(True, False), (True, False), (False, False), (False, True)]
    assert stopper.best == 9.0 and stopper.best_epoch == 2
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(stopper.state_dict())
    assert restored.state_dict() == stopper.state_dict()


def test_early_stopping_prefers_eligible_epochs():
    # ineligible epochs (below train.min_colorfulness) are best only until an eligible one comes
    stopper = EarlyStopping(patience=3)
    decisions = [stopper.update(value, epoch, eligible)
                 for epoch, (value, eligible) in enumerate([(9.0, False), (8.5, False), (9.4, True),
                                                            (8.0, False), (9.2, True), (9.3, True)], start=1)]
    assert decisions == [True, True, True, False, True, False]
    assert (stopper.best, stopper.best_epoch, stopper.best_eligible) == (9.2, 5, True)
    restored = EarlyStopping(patience=3)
    restored.load_state_dict(stopper.state_dict())
    assert (restored.best, restored.best_epoch, restored.best_eligible) == (9.2, 5, True)
