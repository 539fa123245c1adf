"""One pixel budget for every path that shows frames to a model: hf inference, LoRA training, the gate, vLLM.

Qwen-VL turns an image into one token per ``factor x factor`` pixels (``factor`` = 2 x patch size: 28 for
Qwen2/2.5-VL, 32 for Qwen3-VL), after resizing it so both sides are multiples of ``factor`` and the area
lies within ``[min_pixels, max_pixels]``. The hf backend and training resize with ``qwen-vl-utils`` and
the budget below; a vLLM server would use the checkpoint's own budget (up to 16,384 tokens an image), so
the openai backend resizes each frame to exactly the size hf would use before sending it. A server
then has nothing left to resize (its own rounding of a size that already fits is the identity), and
every path sees the same pixels, hence the same image tokens.

Pure Python and Pillow: the openai extra does not need torch.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

from PIL import Image

# 64 to 448 tokens of 28x28 pixels per frame (Qwen2/2.5-VL): a 640x360 frame keeps its size (299 tokens).
DEFAULT_MIN_PIXELS = 64 * 28 * 28
DEFAULT_MAX_PIXELS = 448 * 28 * 28
# Qwen's limit on the aspect ratio of an image.
MAX_ASPECT_RATIO = 200


def fit_to_budget(
    width: int,
    height: int,
    *,
    factor: int = 28,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """The (width, height) Qwen-VL's preprocessing resizes an image to: multiples of ``factor``, area in budget.

    The same arithmetic as ``qwen_vl_utils.smart_resize`` and the transformers processors (nearest
    multiple; if the area is too large, scale down and round down; if too small, scale up and round up),
    so that both sides agree to the pixel.

    Raises:
        ValueError: a side is not positive, the budget is inverted, or the aspect ratio exceeds 200.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels ({max_pixels}) is below min_pixels ({min_pixels})")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of a {width}x{height} image exceeds {MAX_ASPECT_RATIO}")
    w = max(factor, round(width / factor) * factor)
    h = max(factor, round(height / factor) * factor)
    if w * h > max_pixels:
        scale = math.sqrt(width * height / max_pixels)
        w = max(factor, math.floor(width / scale / factor) * factor)
        h = max(factor, math.floor(height / scale / factor) * factor)
    elif w * h < min_pixels:
        scale = math.sqrt(min_pixels / (width * height))
        w = math.ceil(width * scale / factor) * factor
        h = math.ceil(height * scale / factor) * factor
    return w, h


def image_tokens(
    width: int,
    height: int,
    *,
    factor: int = 28,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> int:
    """How many image tokens one frame of this size costs in the prompt (without its start/end markers)."""
    w, h = fit_to_budget(width, height, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return (w // factor) * (h // factor)


def budget_data_url(
    path: str | Path, *, factor: int = 28, min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS
) -> str:
    """The image as a data URL, already at the size hf inference would resize it to.

    A file that needs no resizing is sent as it is (a JPEG is not re-encoded: the server decodes the
    same pixels hf does); a resized one is sent as PNG, so resizing is the only change.
    """
    raw = Path(path).read_bytes()
    with Image.open(io.BytesIO(raw)) as source:
        source_format = source.format
        image = _to_rgb(source)
    target = fit_to_budget(*image.size, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    if target == image.size and source_format in ("JPEG", "PNG"):
        mime = "jpeg" if source_format == "JPEG" else "png"
        return f"data:image/{mime};base64," + base64.b64encode(raw).decode("ascii")
    if target != image.size:
        image = image.resize(target, Image.Resampling.BICUBIC)  # qwen-vl-utils' (Pillow's default) filter
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB the way qwen-vl-utils makes it: transparency over white, everything else converted."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MIN_PIXELS", "budget_data_url", "fit_to_budget", "image_tokens"]
