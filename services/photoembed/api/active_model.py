"""The configured model's identity, which reads and searches compare stored vectors with.

The towers manifest that `photoembed model onnx` writes names it (`clip.runtimes.towers`), and
reading it needs no torch. Without a manifest, working it out needs OpenCLIP's metadata (and so
torch), which the API process never imports: `photoembed model info` runs once in a child
process, started with the app, and the first request that needs the answer waits for it. None
when neither can tell (no weights, no torch); reads then fall back to each photo's newest vector,
and the manifest is looked for again on each read until one appears.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future

from photoembed.clip.runtimes.towers import read_manifest
from photoembed.config import Settings
from photoembed.logging import get_logger

log = get_logger(__name__)

TIMEOUT_S = 300


def identity_in_child(settings: Settings) -> str | None:
    env = {**os.environ, **settings.environment()}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "photoembed.cli", "model", "info"],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        info = json.loads(done.stdout)
    except (subprocess.TimeoutExpired, ValueError) as exc:
        log.warning("model.identity_unknown", error=f"{type(exc).__name__}: {exc}")
        return None
    identity = info.get("identity")
    if identity is None:
        log.warning("model.identity_unknown", error=info.get("error"))
    return identity if isinstance(identity, str) else None


class ActiveModel:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._future: Future[str | None] = Future()
        self._started = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work_out, name="photoembed-active-model", daemon=True
                )
                self._thread.start()

    def _from_manifest(self) -> str | None:
        manifest = read_manifest(self._settings)
        return manifest.identity if manifest is not None else None

    def _work_out(self) -> None:
        try:
            identity = self._from_manifest() or identity_in_child(self._settings)
        except BaseException as exc:
            self._future.set_exception(exc)
            return
        log.info("api.active_model", model=identity)
        self._future.set_result(identity)

    def get(self) -> str | None:
        """Blocks (in a worker thread) until the child has answered."""
        self.start()
        identity = self._future.result(timeout=TIMEOUT_S)
        return identity if identity is not None else self._from_manifest()
