"""The command line as an installed program: each command is dispatched to its own handler,
anything else is refused, and the migrations travel with the package."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import psycopg
import pytest

from photoembed.cli import build_parser
from photoembed.devstack import LocalPostgres

REPO = Path(__file__).resolve().parents[1]


def _photoembed(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "photoembed.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _leaf_parsers(
    parser: argparse.ArgumentParser, path: str = ""
) -> dict[str, argparse.ArgumentParser]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return {path.strip(): parser}
    leaves: dict[str, argparse.ArgumentParser] = {}
    for name, child in subparsers[0].choices.items():
        leaves.update(_leaf_parsers(child, f"{path} {name}"))
    return leaves


def test_every_command_has_its_own_handler():
    leaves = _leaf_parsers(build_parser())
    assert {"api", "worker", "migrate", "model info", "model export", "dev"} <= set(leaves)
    without_handler = sorted(
        name for name, parser in leaves.items() if parser.get_default("run") is None
    )
    assert without_handler == []


@pytest.mark.parametrize("argv", [["frobnicate"], ["model"], ["model", "frobnicate"], []])
def test_an_unknown_or_incomplete_command_is_refused(tmp_path: Path, argv: list[str]):
    result = _photoembed(*argv, cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr or "required" in result.stderr


def test_migrate_works_from_any_folder(tmp_path: Path, postgres: LocalPostgres):
    # given an empty database and a folder that is not the checkout
    name = f"anywhere_{uuid.uuid4().hex[:8]}"
    admin_url = postgres.url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url.replace("/photoembed?", f"/{name}?")
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url, "ENV": "dev", "LOG_FORMAT": "json"}

    # when the installed command migrates it from there
    result = _photoembed("migrate", cwd=tmp_path, env=env)

    # then every table is there
    assert result.returncode == 0, result.stderr
    with psycopg.connect(admin_url.replace("/photoembed?", f"/{name}?")) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"photos", "persons", "alembic_version"} <= tables


def test_the_built_package_carries_the_migrations(tmp_path: Path):
    # built from a clean copy: a build/ folder left in the checkout would hide a missing file
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "services",
        source / "services",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("photoembed-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {name for name in names if name.startswith("photoembed/migrations/")}
    assert "photoembed/migrations/env.py" in migrations
    assert "photoembed/migrations/script.py.mako" in migrations
    versions = sorted(
        p.name for p in (REPO / "services/photoembed/migrations/versions").glob("*.py")
    )
    assert versions and {f"photoembed/migrations/versions/{v}" for v in versions} <= migrations
