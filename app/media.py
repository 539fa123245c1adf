"""Media access: only files under configured roots, never by a path a browser can steer.

The browser never names a file. Handlers look a sample up in the store, take its recorded frame
and video paths, and serve them only when they resolve (symlinks followed) inside an allowed root
and have a media extension. Frames are re-encoded through Pillow into small inline JPEG data URLs,
so a stored path that is not really an image yields nothing.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

from kuaimod_open.ingest.sample import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from kuaimod_open.loop.store import Store

ZOOM_SIDE = 640  # frames are inlined this large (the model saw up to 640 px) and shown smaller until clicked


def resolve_roots(roots: Iterable[str | Path]) -> tuple[Path, ...]:
    """Existing root folders, fully resolved, without duplicates."""
    seen: list[Path] = []
    for root in roots:
        path = Path(root).expanduser().resolve()
        if path.is_dir() and path not in seen:
            seen.append(path)
    return tuple(seen)


def store_media_roots(store: Store) -> tuple[Path, ...]:
    """The folders holding the frames and videos recorded in the store (``kuaimod moderate --db`` writes them).

    Only folders of files with a media extension count, so a stored path cannot open up an arbitrary folder
    by naming a non-media file in it.
    """
    t = store.table("samples")
    folders: set[str] = set()
    with store.engine.connect() as conn:
        for frames, video in conn.execute(store.sa.select(t.c.frames, t.c.video)):
            for frame in json.loads(frames or "[]"):
                path = frame.get("path") if isinstance(frame, dict) else None
                if isinstance(path, str) and Path(path).suffix.lower() in IMAGE_EXTENSIONS:
                    folders.add(str(Path(path).parent))
            if isinstance(video, str) and Path(video).suffix.lower() in VIDEO_EXTENSIONS:
                folders.add(str(Path(video).parent))
    return resolve_roots(sorted(folders))


def safe_media_path(path: str | Path | None, roots: Sequence[Path], kinds: frozenset[str]) -> Path | None:
    """``path`` resolved, if it is an existing file of an allowed kind inside one of ``roots``; else None."""
    if path is None or str(path).strip() == "" or "\x00" in str(path):
        return None
    try:
        resolved = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):  # missing file, symlink loop
        return None
    if not resolved.is_file() or resolved.suffix.lower() not in kinds:
        return None
    # resolve() removed every '..' and followed links, so containment is a plain prefix test.
    if any(resolved == root or root in resolved.parents for root in roots):
        return resolved
    return None


def safe_frame(path: str | Path | None, roots: Sequence[Path]) -> Path | None:
    """A frame image path that may be shown."""
    return safe_media_path(path, roots, IMAGE_EXTENSIONS)


def safe_video(path: str | Path | None, roots: Sequence[Path]) -> Path | None:
    """A video path that may be played."""
    return safe_media_path(path, roots, VIDEO_EXTENSIONS)


def video_url(path: Path) -> str:
    """The URL the app's file route serves a checked video from (relative, so it works under a root path)."""
    return "gradio_api/file=" + quote(str(path))


def frame_data_url(path: Path, side: int = ZOOM_SIDE) -> str | None:
    """A small JPEG data URL of an image file, or None when it does not decode as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as source:
            image = source.convert("RGB")
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
