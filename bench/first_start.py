"""What a newcomer waits for: `photoembed dev` (`make run`) started on an empty home, a photo
uploaded as soon as it says `dev.running`, the seconds to READY; then stopped with Ctrl-C and
started again on the same home (the model exported, the data kept).

    .venv/bin/python bench/first_start.py

Prints one line a start; the README's first screen quotes them."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from photoembed.devstack import free_port
from photoembed.samples import encode, make_photo

REPO = Path(__file__).resolve().parents[1]

SETTINGS_OF_THIS_SHELL = ("CLIP_", "API_", "WORKER_", "DATABASE_", "REDIS_", "STORAGE_")


def start(home: Path, env: dict[str, str], name: str, seed: int) -> str:
    """One start: seconds to `dev.running`, then a photo's upload to READY."""
    log_path = home / f"dev-{name}.log"
    began = time.monotonic()
    with log_path.open("w") as log:
        dev = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "photoembed"), "dev", "--home", str(home)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while '"dev.running"' not in log_path.read_text():
            if dev.poll() is not None:
                raise SystemExit(f"photoembed dev ended: see {log_path}")
            time.sleep(0.1)
        running = time.monotonic() - began
        key = (home / "api-key").read_text().strip()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{env['API_PORT']}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as client:
            uploaded = time.monotonic()
            response = client.post("/photos", files={"file": ("a.jpg", encode(make_photo(seed)))})
            response.raise_for_status()
            url = f"/photos/{response.json()['id']}"
            while (status := client.get(url).json()["status"]) not in ("READY", "FAILED"):
                time.sleep(0.05)
            ready = time.monotonic() - uploaded
        return f"{name} start: dev.running after {running:.1f} s; the upload {status} {ready:.2f} s later"
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(90)


def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_OF_THIS_SHELL)}
    env.update(
        API_PORT=str(free_port()),
        DEV_REDIS_PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
        LOG_FORMAT="json",
    )
    with tempfile.TemporaryDirectory(prefix="photoembed-first-start-") as home:
        for name, seed in (("first", 901), ("second", 902)):
            print(start(Path(home), env, name, seed), flush=True)


if __name__ == "__main__":
    main()
