import pytest
import torch

from colorize.config import ConfigError, ModelConfig
from colorize.models import create_model, model_kwargs


def build(**overrides):
    return create_model("fusion", **model_kwargs(ModelConfig(**overrides), num_classes=10, resolution=32))


def test_output_shapes_for_32x32_input():
    ab, logits = build()(torch.rand(4, 1, 32, 32) * 100)
    assert ab.shape == (4, 2, 32, 32) and logits.shape == (4, 10)


def test_reference_widths_have_about_two_million_parameters():
    count = sum(p.numel() for p in build().parameters())
    assert count == 1_989_580


def test_widths_are_configurable():
    small = build(width=8, global_hidden=64, global_dim=16)
    assert sum(p.numel() for p in small.parameters()) < 100_000
    ab, logits = small(torch.rand(2, 1, 32, 32) * 100)
    assert ab.shape == (2, 2, 32, 32)


def test_eval_mode_handles_a_batch_of_one():
    model = build().eval()
    with torch.no_grad():
        ab, logits = model(torch.rand(1, 1, 32, 32) * 100)
    assert torch.isfinite(ab).all() and logits.shape == (1, 10)


def test_classifier_returns_logits_and_encoder_runs_once():
    model = build()
    assert isinstance(model.classifier, torch.nn.Linear)  # no softmax: logits go to the loss
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    model(torch.rand(2, 1, 32, 32) * 100)
    assert len(calls) == 1


def test_other_resolutions_and_unknown_names():
    model = create_model("fusion", num_classes=3, resolution=64)
    assert model(torch.rand(2, 1, 64, 64) * 100)[0].shape == (2, 2, 64, 64)
    with pytest.raises(ConfigError, match="not a known model"):
        create_model("unet")


def test_a_resolution_the_model_cannot_use_is_a_config_error():
    with pytest.raises(ConfigError, match="fusion.*multiple of 8.*48 or 56"):
        create_model("fusion", num_classes=3, resolution=50)
