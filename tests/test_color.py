import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from colorize.core import color
from colorize.core.color import ab_from_network, join_lab, lab_to_rgb, normalize_l, rgb8_to_lab, rgb_to_lab

EDGES = np.array([
    [0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1],
    [1, 1, 0], [0, 1, 1], [1, 0, 1], [0.5, 0.5, 0.5], [0.04045, 0.04045, 0.04045], [0.001, 0, 0],
])


def as_nchw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(hwc).permute(2, 0, 1).unsqueeze(0)


def random_rgb(seed=0, shape=(37, 41)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.random(shape + (3,))
    image[0, : len(EDGES)] = EDGES
    return image


def test_rgb_to_lab_matches_skimage_float64():
    rgb = random_rgb()
    ours = rgb_to_lab(as_nchw(rgb))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, rgb2lab(rgb), atol=1e-4, rtol=0)


def test_edges_have_known_lab_values():
    lab = rgb_to_lab(as_nchw(EDGES[None]))[0].permute(1, 2, 0).numpy()[0]
    np.testing.assert_allclose(lab[0], [0, 0, 0], atol=1e-4)  # black
    np.testing.assert_allclose(lab[1], [100, 0, 0], atol=1e-2)  # white
    assert lab[2, 1] > 75 and lab[4, 2] < -100  # red is very +a, blue very -b


def test_lab_to_rgb_matches_skimage_and_round_trips():
    rgb = random_rgb(1)
    lab = rgb2lab(rgb)
    ours = lab_to_rgb(as_nchw(lab))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, lab2rgb(lab), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours, rgb, atol=1e-4, rtol=0)


def test_out_of_gamut_lab_is_clipped_like_skimage():
    rng = np.random.default_rng(2)
    lab = np.stack([rng.uniform(0, 100, (20, 20)), rng.uniform(-128, 127, (20, 20)),
                    rng.uniform(-128, 127, (20, 20))], axis=-1)
    ours = lab_to_rgb(as_nchw(lab))
    assert ours.min() >= 0 and ours.max() <= 1
    with pytest.warns(UserWarning):  # skimage warns about the negative Z it clips
        expected = lab2rgb(lab)
    np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), expected, atol=1e-4, rtol=0)


def test_float32_batches_keep_dtype_and_agree():
    rgb = torch.from_numpy(np.stack([random_rgb(s, (8, 12)) for s in range(4)])).permute(0, 3, 1, 2)
    lab32 = rgb_to_lab(rgb.float())
    assert lab32.dtype == torch.float32 and lab32.shape == (4, 3, 8, 12)
    torch.testing.assert_close(lab32.double(), rgb_to_lab(rgb), atol=2e-3, rtol=0)
    assert lab_to_rgb(lab32).dtype == torch.float32


def test_8_bit_images_convert_through_a_table_as_their_floats_do():
    every = torch.arange(256, dtype=torch.uint8)
    rgb = torch.stack((every, every.flip(0), every.roll(7))).reshape(1, 3, 16, 16)  # every level of each channel
    assert torch.allclose(rgb8_to_lab(rgb), rgb_to_lab(rgb.float() / 255), atol=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        rgb8_to_lab(rgb.float())


def test_rejects_wrong_shapes_and_integer_tensors():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        rgb_to_lab(torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        lab_to_rgb(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


def test_network_scaling():
    assert normalize_l(torch.tensor([0.0, 50.0, 100.0])).tolist() == [-1.0, 0.0, 1.0]
    assert ab_from_network(torch.tensor([1.0])).item() > 100
    lab = join_lab(torch.zeros(2, 1, 4, 4), torch.ones(2, 2, 4, 4))
    assert lab.shape == (2, 3, 4, 4) and lab[:, 1:].eq(1).all()


def test_constants_are_built_once_per_device_and_dtype(monkeypatch):
    built, build = [], color._build_constants
    monkeypatch.setattr(color, "_CONSTANTS", {})
    monkeypatch.setattr(color, "_build_constants", lambda *key: built.append(key) or build(*key))
    rgb = as_nchw(random_rgb())
    lab, lab32 = rgb_to_lab(rgb), rgb_to_lab(rgb.float())
    back, back32 = lab_to_rgb(lab), lab_to_rgb(lab32)

    def no_constants(*args, **kwargs):
        raise AssertionError("a conversion built a constant")

    monkeypatch.setattr(torch, "tensor", no_constants)
    monkeypatch.setattr(torch.linalg, "inv", no_constants)
    assert torch.equal(rgb_to_lab(rgb), lab) and torch.equal(lab_to_rgb(lab), back)
    assert torch.equal(rgb_to_lab(rgb.float()), lab32) and torch.equal(lab_to_rgb(lab32), back32)
    assert built == [(torch.device("cpu"), torch.float64), (torch.device("cpu"), torch.float32)]
