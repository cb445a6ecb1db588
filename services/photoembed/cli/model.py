"""Commands on the model: `photoembed model info|download|export|onnx`, `photoembed selfcheck`,
and `photoembed logcheck` for a worker's log."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from photoembed.cli.common import configured_settings, log
from photoembed.clip.errors import ModelLoadError
from photoembed.config import Settings


def run_selfcheck(settings: Settings, record: bool) -> int:
    from photoembed.sizing import resolve
    from photoembed.worker.boot_checks import run_boot_checks

    results = run_boot_checks(resolve(settings), record=record)
    for result in results:
        for finding in result.findings:
            log.error("selfcheck.failed", code=finding.code, finding=finding.message)
    if not all(result.ok for result in results):
        return 1
    for result in results:
        if result.recorded:
            log.info(
                "selfcheck.recorded", model=result.identity, reference=str(result.reference_path)
            )
        log.info("selfcheck.passed", model=result.identity)
    return 0


def run_logcheck(path: Path | None, follow: bool) -> int:
    """A saved log, or with `follow` a stream: standard input (or `path` read to its end), each
    offending line printed as soon as it is read. Exit 1 if there was one."""
    if path is None and not follow:
        print("logcheck: name a log FILE, or read standard input with --follow", file=sys.stderr)
        return 2
    if path is None or str(path) == "-":
        return _report_problems("standard input", sys.stdin)
    with path.open(errors="replace") as lines:
        return _report_problems(str(path), lines)


def _report_problems(name: str, lines: Iterable[str]) -> int:
    from photoembed.logcheck import find_problems

    found = 0
    for problem in find_problems(lines):
        found += 1
        print(f"{name}:{problem.line_number}: {problem.line[:500]}", flush=True)
    print(f"logcheck: {found} model-loading warning(s) or error(s) in {name}")
    return 1 if found else 0


def model_info(settings: Settings) -> int:
    from photoembed.clip.backends import active_identity, plan_for

    try:
        plan = plan_for(settings)
        identity = active_identity(settings)
    except ModelLoadError as exc:
        print(json.dumps({"loadable": False, "error": str(exc)}, indent=2))
        return 1
    print(json.dumps({"loadable": True, "identity": identity, **plan.describe()}, indent=2))
    return 0


def model_download(settings: Settings) -> int:
    from photoembed.clip.weights_files import download_weights

    path, meta = download_weights(settings)
    log.info("model.downloaded", path=str(path), sha256=meta.sha256, quick_gelu=meta.quick_gelu)
    return 0


def model_export(settings: Settings, output: Path) -> int:
    from photoembed.clip.runtimes.torch_runtime import ClipEmbedder
    from photoembed.clip.weights_files import export_weights

    meta = export_weights(ClipEmbedder(settings).load(), output)
    log.info("model.exported", path=str(output), sha256=meta.sha256, quick_gelu=meta.quick_gelu)
    return 0


def model_onnx(settings: Settings) -> int:
    from photoembed.clip.onnx_export import ensure_onnx

    path = ensure_onnx(settings)
    print(json.dumps({"onnx": str(path)}))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("selfcheck", help="run the model self-check alone; exit 0 or 1")
    check.add_argument("--record", action="store_true", help="record the reference vector")
    check.set_defaults(run=lambda args: run_selfcheck(configured_settings(), args.record))
    logcheck = commands.add_parser("logcheck", help="exit 1 if a log shows model-loading warnings")
    logcheck.add_argument("file", type=Path, nargs="?", help="a saved log; - or none: stdin")
    logcheck.add_argument(
        "--follow", action="store_true", help="read a stream, printing each record as it arrives"
    )
    logcheck.set_defaults(run=lambda args: run_logcheck(args.file, args.follow))
    model = commands.add_parser("model", help="model weights").add_subparsers(
        dest="model_command", required=True
    )
    model.add_parser(
        "info", help="what would be loaded, from where, with which activation"
    ).set_defaults(run=lambda args: model_info(configured_settings()))
    model.add_parser(
        "download", help="fetch the configured weights into CLIP_CACHE_DIR"
    ).set_defaults(run=lambda args: model_download(configured_settings()))
    export = model.add_parser("export", help="save the loaded model to a file with its metadata")
    export.add_argument("--output", type=Path, required=True)
    export.set_defaults(run=lambda args: model_export(configured_settings(), args.output))
    model.add_parser(
        "onnx",
        help="export the image tower to ONNX for EMBED_RUNTIME=onnx (once per weights); prints "
        "the file as JSON",
    ).set_defaults(run=lambda args: model_onnx(configured_settings()))
