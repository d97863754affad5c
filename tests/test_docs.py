"""The MkDocs site builds with --strict: a broken link, a missing page or an undocumented public API fails."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e .[docs], part of .[test])")
pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed (.[docs])")


def _build(tmp_path, root=ROOT):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=str(root), capture_output=True, text=True, timeout=600)


def test_site_builds_strict(tmp_path):
    proc = _build(tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    site = tmp_path / "site"
    for page in ("index.html", "quickstart/index.html", "ros2/index.html", "driving-logs/index.html",
                 "benchmarks/index.html", "compiled/index.html", "fine-tuning/index.html", "cli/index.html",
                 "reference/cli/index.html", "reference/api/index.html"):
        assert (site / page).is_file(), page
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "rgpt4d-sdk analyze nuscenes" in cli and "--num-frames" in cli
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert "RegionQuery" in api and "from_video" in api


def test_a_broken_link_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "docs" / "reference" / "api.md").write_text("# Python API\n")  # keep this build short
    page = copy / "docs" / "ros2.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [nothing](no-such-page.md).\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
                          cwd=str(copy), capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0 and "no-such-page.md" in proc.stderr


def test_the_docstring_check_names_what_is_missing(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks" / "generated.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    (tmp_path / "i17_sample_api.py").write_text(
        'def documented():\n    """Yes."""\n\n\ndef bare():\n    pass\n\n\nclass K:\n    """K."""\n\n'
        '    def method(self):\n        pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert sorted(hooks._undocumented("i17_sample_api")) == ["i17_sample_api.K.method", "i17_sample_api.bare"]
