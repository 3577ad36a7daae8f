"""The architecture's guard: which part of flatline may import which (docs/DESIGN.md, "Layout").

    common       imports nothing else of flatline
    trainer      common                      (never the probes or the judges)
    probes       common                      (read step records, never the trainer's internals)
    diagnostics  common                      (judge metric histories alone: no trainer, probes or harness)
    harness      anything                    (the wiring: CLI, case runs, selftest, plug-in properties)
    integrations anything but harness        (flatline inside loops it did not write, e.g. TRL)

Every import is read with `ast`, also the ones inside functions, so a lazy import cannot slip past.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flatline"
# part -> the parts of flatline it may import besides itself
ALLOWED = {
    "common": set(),
    "trainer": {"common"},
    "probes": {"common"},
    "diagnostics": {"common"},
    "integrations": {"common", "trainer", "probes", "diagnostics"},
    "harness": {"common", "trainer", "probes", "diagnostics", "integrations"},
}


def imported_modules(path: Path, package_parts: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; relative imports are resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from flatline import probes` imports the part named after `import`
            if module == "flatline":
                found += [(node.lineno, f"flatline.{alias.name}") for alias in node.names]
    return found


def part_of(module: str) -> str | None:
    """'flatline.probes.sync' -> 'probes'; None for anything outside flatline's parts."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "flatline" and pieces[1] in ALLOWED else None


def layer_violations(package: Path) -> list[str]:
    """Every import that crosses a layer the wrong way, as 'file:line: part imports module'."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent)
        parts = relative.with_suffix("").parts  # ('flatline', 'probes', 'sync')
        if len(parts) < 3 or parts[1] not in ALLOWED:
            continue  # flatline/__init__.py and anything outside the parts
        owner = parts[1]
        package_parts = parts[:-1] if path.name != "__init__.py" else parts[:-1]
        for line, module in imported_modules(path, package_parts):
            target = part_of(module)
            if target is not None and target != owner and target not in ALLOWED[owner]:
                problems.append(f"{relative}:{line}: {owner} imports {module}")
    return problems


def test_every_part_imports_only_the_layers_below_it():
    assert layer_violations(PACKAGE) == []


def test_every_part_has_a_rule():
    parts = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert parts <= set(ALLOWED), f"add a layering rule for {sorted(parts - set(ALLOWED))}"


@pytest.mark.parametrize("owner, statement", [
    ("trainer", "from flatline.probes.base import Probe"),
    ("trainer", "    from flatline.diagnostics.judge import judge"),  # a lazy import inside a function
    ("probes", "from flatline.trainer.algorithm import group_reward_std"),
    ("probes", "from ..trainer import loop"),
    ("diagnostics", "from flatline import probes"),
    ("diagnostics", "import flatline.harness.cli"),
    ("common", "from flatline.trainer.config import Config"),
])
def test_a_forbidden_import_is_caught(tmp_path, owner, statement):
    copy = tmp_path / "flatline"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / owner / "__init__.py"
    body = f"def late():\n{statement}\n" if statement.startswith(" ") else statement + "\n"
    target.write_text(target.read_text(encoding="utf-8") + "\n" + body, encoding="utf-8")
    problems = layer_violations(copy)
    assert len(problems) == 1 and problems[0].startswith(f"flatline/{owner}/__init__.py:"), problems


def test_a_users_own_trainer_probes_and_diagnostics_modules_do_not_shadow_flatline(tmp_path):
    """Training projects often hold a trainer.py; importing flatline from inside one must still work."""
    for name in ("trainer", "probes", "diagnostics", "harness", "common"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('the user module was imported')\n")
    code = ("import flatline.probes, flatline.diagnostics.judge, flatline.trainer.config, flatline.harness.cli; "
            "from flatline.probes import attach; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
