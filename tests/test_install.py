"""What an install puts into site-packages: the one namespace `flatline`, with the card's top-level folders inside it.

pyproject.toml maps trainer/, probes/ and diagnostics/ to flatline.trainer, .probes and .diagnostics (docs/DESIGN.md,
"Layout"). These tests install the checkout the two ways users do and import it from a folder that holds its own
trainer.py, probes/ and diagnostics.py, the names a training project is likely to have.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
IMPORTS = ("import flatline.trainer.config, flatline.probes, flatline.diagnostics.judge, flatline.harness.cli, "
           "flatline.integrations; import flatline.trainer as t, flatline.probes as p, flatline.diagnostics as d; "
           "print(t.__file__); print(p.__file__); print(d.__file__)")


def users_project(tmp_path: Path) -> Path:
    """A training project's folder whose own modules would be imported if flatline's names were generic."""
    project = tmp_path / "project"
    (project / "probes").mkdir(parents=True)
    for module in (project / "trainer.py", project / "diagnostics.py", project / "probes" / "__init__.py"):
        module.write_text("raise ImportError('the user module was imported instead of flatline')\n")
    return project


def run(args, cwd, **kwargs):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)


def test_the_package_list_names_every_package_folder():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = set()
    for name, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join((name,) + init.parent.relative_to(ROOT / folder).parts))
    assert found == listed


def test_the_distribution_has_a_name_of_its_own_and_keeps_the_command():
    assert PYPROJECT["project"]["name"] == "flatline-rl"
    assert PYPROJECT["project"]["scripts"] == {"flatline": "flatline.harness.cli:main"}
    assert "pip install flatline-rl" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_editable_install_serves_the_checkout_from_a_users_folder(tmp_path):
    project = users_project(tmp_path)
    result = run([sys.executable, "-c", IMPORTS], cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(ROOT / "trainer" / "__init__.py"), str(ROOT / "probes" / "__init__.py"),
                                     str(ROOT / "diagnostics" / "__init__.py")]
    site = Path(sysconfig.get_paths()["purelib"])
    ours = sorted(p.name for p in site.iterdir() if "flatline" in p.name.lower())
    assert [n for n in ours if not n.startswith(("__editable__", "flatline_rl-"))] == []
    assert not any((site / name).exists() for name in ("trainer", "probes", "diagnostics", "harness", "common"))
    cli = run([str(Path(sys.executable).with_name("flatline")), "diagnose", str(ROOT / "reports/examples/default-arithmetic"),
               "--format", "json"], cwd=project)
    assert cli.returncode in (0, 1) and '"verdicts"' in cli.stdout, cli.stderr


@pytest.mark.slow
def test_a_fresh_venv_install_holds_one_top_level_package(tmp_path):
    """pip install . (not editable) into a new venv: its site-packages gains flatline and the dist-info alone."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for folder in {Path(f).parts[0] for f in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # The wheel is built by this venv's setuptools (no download), then installed as pip installs any wheel.
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                 str(tmp_path / "dist"), str(source)], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("flatline_rl-*.whl"))
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    dist_info = f"flatline_rl-{PYPROJECT['project']['version']}.dist-info"
    assert top == {"flatline", dist_info}

    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    installed = run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                     str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=tmp_path).stdout.strip())
    before = {p.name for p in site.iterdir()}
    # flatline's dependencies come from this venv (a path file), so the test downloads nothing.
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    ours = {name for name in before if "flatline" in name.lower()}
    assert ours == {"flatline", dist_info}
    assert not {"trainer", "probes", "diagnostics", "harness", "common", "integrations"} & before

    project = users_project(tmp_path)
    result = run([str(python), "-c", IMPORTS], cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(site / "flatline" / part / "__init__.py")
                                     for part in ("trainer", "probes", "diagnostics")]
    cli = run([str(venv / "bin" / "flatline"), "diagnose", str(ROOT / "reports/examples/default-arithmetic"),
               "--format", "json"], cwd=project)
    assert cli.returncode in (0, 1) and '"verdicts"' in cli.stdout, cli.stderr
