"""`photoembed logcheck FILE`: fail when a worker log shows a warning or an error from model loading;
`photoembed logcheck --follow` does the same for a stream (`docker compose logs -f worker |
photoembed logcheck --follow`), printing each offending record as it arrives.

The ML warnings that matter most crash nothing (a QuickGELU mismatch degrades every embedding and
the worker runs on), so operators and CI read the log for them. A line counts when it is a
WARNING-or-worse record from model loading: our `model.*` and `selfcheck.*` events, any Python
warning (`py.warnings`), or a record of the loading libraries (OpenCLIP logs on the root logger).
Raw lines written before logging was set up count when they carry a warning or a traceback. A
line that docker compose prefixed with its container's name is read after the prefix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BAD_LEVELS = {"warning", "error", "critical", "exception"}
LOADING_EVENTS = ("model.", "selfcheck.")
LOADING_LOGGERS = (
    "py.warnings",
    "root",
    "open_clip",
    "huggingface_hub",
    "timm",
    "torch",
    "photoembed.clip",
)
RAW_PATTERN = re.compile(r"\b\w*Warning\b:|QuickGELU mismatch|^Traceback \(most recent call last\)")
# `docker compose logs`: "worker-1  | {...}"
COMPOSE_PREFIX = re.compile(r"^[\w.-]+\s*\|\s?")


@dataclass(frozen=True)
class Problem:
    line_number: int
    line: str


def _is_loading_problem(record: dict[str, object]) -> bool:
    if str(record.get("level", "")).lower() not in BAD_LEVELS:
        return False
    event = str(record.get("event", ""))
    logger = str(record.get("logger", ""))
    return event.startswith(LOADING_EVENTS) or logger.startswith(LOADING_LOGGERS)


def is_problem(line: str) -> bool:
    text = COMPOSE_PREFIX.sub("", line.strip(), count=1)
    if not text:
        return False
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict):
        return _is_loading_problem(record)
    return RAW_PATTERN.search(text) is not None


def find_problems(lines: Iterable[str]) -> Iterator[Problem]:
    """The offending lines, as they are read (a stream is read to its end)."""
    for number, line in enumerate(lines, start=1):
        if is_problem(line):
            yield Problem(number, line.strip())


def check_file(path: Path) -> list[Problem]:
    return list(find_problems(path.read_text(errors="replace").splitlines()))
