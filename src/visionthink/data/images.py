"""Decoding sample images into RGB, with errors that say what is wrong and what to do."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from visionthink.errors import InputError


class ImageLoadError(InputError):
    """The image could not be read."""


# Far above any training image (VisionThink's data is at most 2048x2048), below what would
# exhaust a loader's memory: a 12000x12000 PNG decodes to 430 MB and peaks near 3 GB
DEFAULT_MAX_PIXELS = 8192 * 8192


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any PIL mode; transparency is composited onto white (not black)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16/32-bit greyscale: rescale to 8 bits, PIL's direct conversion clips at 255.
        array = image.convert("F")
        low, high = array.getextrema()
        scale = 255.0 / (high - low) if high > low else 0.0
        image = array.point(lambda value: (value - low) * scale).convert("L")
    return image.convert("RGB")


def load_image(value: Any, base_dir: Path | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a PIL image, encoded bytes, a ``{"bytes", "path"}`` dict (HF datasets) or a path,
    turned upright by its EXIF orientation (as viewers show a phone photo). An image of more than
    ``max_pixels`` is refused from its header, before it is decoded."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ImageLoadError(
                f"expected one image per sample, found {len(value)}",
                "Multi-image samples are not supported; split them",
            )
        value = value[0]
    if isinstance(value, Image.Image):
        image = value
        _check_pixels(image, max_pixels)
    else:
        data, path = _bytes_or_path(value, base_dir)
        try:
            with warnings.catch_warnings():
                # Our own limit below decides, with a message that names the sample
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data) if data is not None else path)
            _check_pixels(image, max_pixels)
            image.load()
        except ImageLoadError:
            raise
        except FileNotFoundError:
            raise ImageLoadError(f"image file {path} does not exist", "Fix the path in the data") from None
        except Image.DecompressionBombError as error:
            raise ImageLoadError(f"image is too large to decode safely ({error})", "Downscale it") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            where = f"file {path}" if path is not None else "image bytes"
            raise ImageLoadError(
                f"{where} is not a readable image ({error})", "Re-export the image or drop the sample"
            ) from None
    return to_rgb(ImageOps.exif_transpose(image))


def _check_pixels(image: Image.Image, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            f"image is {width}x{height} px ({width * height / 1e6:.0f} MP), above the limit of {max_pixels / 1e6:.0f} MP",
            "Downscale it, or raise data.max_image_pixels",
        )


def _bytes_or_path(value: Any, base_dir: Path | None) -> tuple[bytes | None, Path | None]:
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"], None
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, (str, Path)) and str(value):
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return None, path
    raise ImageLoadError(
        f"no image: the image column holds {type(value).__name__} {str(value)[:60]!r}",
        "Map data.columns.image to the column with the images",
    )
