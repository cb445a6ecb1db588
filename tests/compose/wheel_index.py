"""A PEP 503 package index over this machine's wheel folders, for image builds that cannot reach
the PyTorch index: `python wheel_index.py PORT ROOT [ROOT ...]`.

Each ROOT holds `simple/<project>/index.html` pages linking `../../files/<wheel>`; the first ROOT
with a page for a project answers, and a project none of them has is redirected to PyPI, so a
build given `--index-url http://127.0.0.1:PORT/simple` gets torch from disk and the rest from PyPI.
"""

from __future__ import annotations

import shutil
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOTS = [Path(root) for root in sys.argv[2:]]


class IndexHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = [part for part in self.path.split("?")[0].split("/") if part]
        if len(parts) == 2 and parts[0] == "simple":
            self._page(parts[1])
        elif len(parts) == 2 and parts[0] == "files":
            self._file(parts[1])
        else:
            self.send_error(404)

    def _page(self, project: str) -> None:
        for root in ROOTS:
            page = root / "simple" / project / "index.html"
            if page.is_file():
                self._send(page.read_bytes(), "text/html")
                return
        self.send_response(302)
        self.send_header("Location", f"https://pypi.org/simple/{project}/")
        self.end_headers()

    def _file(self, name: str) -> None:
        for root in ROOTS:
            path = root / "files" / name
            if path.is_file():
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                with path.open("rb") as wheel:
                    shutil.copyfileobj(wheel, self.wfile)
                return
        self.send_error(404)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet: pip retries are noisy
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), IndexHandler).serve_forever()
