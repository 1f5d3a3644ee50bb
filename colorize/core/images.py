"""Decode image files of any mode and colour profile into 8-bit sRGB, and square them to a
fixed resolution."""
import functools
import io
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

try:  # a dependency; where it cannot be installed, everything but HEIC still reads
    import pillow_heif
except ImportError:
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()  # HEIC, as phones save photos
HEIF_SUFFIXES = (".heic", ".heif")
# How image files become pixels here: raised whenever a file would decode to other pixels, or
# other files would be read as images, so that data prepared otherwise is prepared again.
DECODING_VERSION = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", *HEIF_SUFFIXES, ".avif", ".webp", ".bmp", ".gif",
                  ".tif", ".tiff", ".jp2", ".ppm", ".pgm", ".pbm", ".pnm")


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


# the modes an embedded ICC profile is applied in, and the mode each becomes in sRGB
_PROFILED_MODES = {"RGB": "RGB", "RGBA": "RGBA", "L": "RGB"}


@functools.lru_cache(maxsize=16)  # photos of one camera or scanner share their profile
def _to_srgb_transform(profile: bytes, mode: str) -> Optional[ImageCms.ImageCmsTransform]:
    """The transform from the colour space ``profile`` describes to sRGB, for images of
    ``mode``; None where the profile cannot be read or does not fit the mode."""
    try:
        return ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.createProfile("sRGB"),
                                       mode, _PROFILED_MODES[mode])
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _in_srgb(image: Image.Image) -> Image.Image:
    """``image`` in sRGB: converted from the colour space of its embedded ICC profile (a phone's
    Display P3, Adobe RGB, a scanner's grey), or as it is without a profile that applies."""
    profile = image.info.get("icc_profile")
    if not profile or image.mode not in _PROFILED_MODES:
        return image
    transform = _to_srgb_transform(bytes(profile), image.mode)
    return image if transform is None else transform.apply(image)


def read_rgb(source: Union[str, Path, BinaryIO, bytes], name: str = "", at_least: int = 0) -> Image.Image:
    """Decode an image (a path, an open file or bytes) into an upright sRGB Pillow image (its
    EXIF orientation and its ICC profile applied). With ``at_least``, a JPEG is decoded at the
    smallest of 1/8, 1/4, 1/2 or full size whose sides are all at least that many pixels (the
    decoder's own downscaling, far faster than decoding in full and resizing).

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
            return _to_rgb(_in_srgb(ImageOps.exif_transpose(image)))
    except Image.DecompressionBombError as error:  # its message: pixels, then the limit
        raise UnreadableImage(f"{name}: too large to decode ({str(error).split(',')[0]})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if pillow_heif is None and Path(name).suffix.lower() in HEIF_SUFFIXES:
            raise UnreadableImage(f"{name}: reading HEIC needs pillow-heif (pip install pillow-heif)") from None
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
