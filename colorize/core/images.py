"""Decode image files of any mode into 8-bit RGB, and square them to a fixed resolution."""
import io
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def is_image_name(name: Union[str, Path]) -> bool:
    """Whether a file of this name (or path) is taken for an image: its suffix is one of
    :data:`IMAGE_SUFFIXES`, in any case."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


class UnreadableImage(ValueError):
    """A file could not be decoded as an image; the message names it."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha is composited onto white, 16-bit and float scaled to 8 bit
    (float grey within [0, 1] as 0 black to 1 white, the usual convention for float images)."""
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit, 32-bit integer or float grey
        values = np.asarray(image, dtype=np.float64)
        highest = values.max(initial=0)
        if image.mode == "F" and highest <= 1:
            peak = 1.0
        else:
            peak = 65535.0 if image.mode.startswith("I;16") or highest > 255 else 255.0
        grey = np.clip(values * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def read_rgb(source: Union[str, Path, BinaryIO, bytes], name: str = "", at_least: int = 0) -> Image.Image:
    """Decode an image (a path, an open file or bytes) into an upright RGB Pillow image (its
    EXIF orientation applied). With ``at_least``, a JPEG is decoded at the smallest of 1/8,
    1/4, 1/2 or full size whose sides are all at least that many pixels (the decoder's own
    downscaling, far faster than decoding in full and resizing).

    Raises :class:`UnreadableImage` naming ``name`` (or the path) when it is not an image, or
    one too large for Pillow's decompression-bomb limit.
    """
    name = name or str(source)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as image:
            if at_least:
                image.draft(None, (at_least, at_least))
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as error:  # its message: pixels, then the limit
        raise UnreadableImage(f"{name}: too large to decode ({str(error).split(',')[0]})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise UnreadableImage(f"{name}: not a readable image ({error})") from None


def rgb_to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """RGB batch (N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8, rounded."""
    return (rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def square_resize(image: Image.Image, resolution: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``resolution`` x ``resolution``: (R, R, 3) uint8."""
    width, height = image.size
    side = min(width, height)
    if side != width or side != height:
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)
