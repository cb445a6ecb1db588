"""Test-only: a process started with this folder on PYTHONPATH and CRASH_MARKER in its environment
dies (os._exit, as from a decoder's segfault or the kernel's OOM killer) the moment it opens image
bytes that contain the marker.

tests/test_reliability.py starts a real worker with it, to show what a photo that kills its worker
every time does to the service. Nothing in the product imports it."""

from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image

_marker = os.environ.get("CRASH_MARKER", "").encode()
_open = Image.open


def _open_or_die(fp: Any, *args: Any, **kwargs: Any) -> Image.Image:
    if isinstance(fp, io.BytesIO) and _marker in fp.getvalue():
        os._exit(70)
    return _open(fp, *args, **kwargs)


if _marker:
    Image.open = _open_or_die
