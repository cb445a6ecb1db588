"""`photoembed logcheck FILE`: fail when a worker log shows a warning or an error from model loading.

The ML warnings that matter most crash nothing (a QuickGELU mismatch degrades every embedding and
the worker runs on), so operators and CI read the log for them. A line counts when it is a
WARNING-or-worse record from model loading: our `model.*` and `selfcheck.*` events, any Python
warning (`py.warnings`), or a record of the loading libraries (OpenCLIP logs on the root logger).
Raw lines written before logging was set up count when they carry a warning or a traceback.
"""

from __future__ import annotations

import json
import re
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


def find_problems(lines: list[str]) -> list[Problem]:
    problems = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict):
            if _is_loading_problem(record):
                problems.append(Problem(number, text))
        elif RAW_PATTERN.search(text):
            problems.append(Problem(number, text))
    return problems


def check_file(path: Path) -> list[Problem]:
    return find_problems(path.read_text(errors="replace").splitlines())
