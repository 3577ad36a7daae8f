"""The architecture's guard: which part of flatline may import which, as docs/DESIGN.md's layer table says.

The table (`| part | may import | why |`) is read from docs/DESIGN.md itself, so the rule and its documentation cannot
drift apart. Where each part's files live comes from pyproject.toml's `package-dir`: flatline.trainer, .probes and
.diagnostics in the card's top-level folders, the rest under flatline/.

Every import is read with `ast`, also the ones inside functions, so a lazy import cannot slip past. Import circles
are looked for among the imports a module runs when it is loaded (its top level).
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "DESIGN.md"


def allowed_imports(design_text: str) -> dict[str, set[str]]:
    """part -> the parts it may import besides itself, from the design's `| part | may import | why |` table."""
    lines = design_text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*part\s*\|\s*may import\s*\|", line))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    parts = [re.sub(r"`", "", row[0]) for row in rows]
    allowed = {}
    for part, row in zip(parts, rows):
        rule = row[1]
        named = set(re.findall(r"`(\w+)`", rule))
        if rule.startswith("nothing"):
            allowed[part] = set()
        elif rule.startswith("everything"):
            allowed[part] = set(parts) - {part}
        elif rule.startswith("all but"):
            allowed[part] = set(parts) - {part} - named
        else:
            allowed[part] = named
    return allowed


ALLOWED = allowed_imports(DESIGN.read_text(encoding="utf-8"))


def part_folders(root: Path) -> dict[str, Path]:
    """part -> its folder: pyproject's package-dir for the mapped ones, flatline/<part> for the rest."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    folders = {}
    for part in ALLOWED:
        mapped = mapping.get(f"flatline.{part}")
        folders[part] = root / mapped if mapped else root / "flatline" / part
    return folders


def module_name(path: Path, part: str, folder: Path) -> tuple[str, ...]:
    """trainer/samplers/vllm.py -> ('flatline', 'trainer', 'samplers', 'vllm'); a package's __init__ names the package."""
    inner = path.relative_to(folder).with_suffix("").parts
    if inner and inner[-1] == "__init__":
        inner = inner[:-1]
    return ("flatline", part) + inner


def imported_modules(path: Path, package_parts: tuple[str, ...], top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; relative imports are resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from flatline import probes` imports the part named after `import`; `from . import x` the submodule
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def part_of(module: str) -> str | None:
    """'flatline.probes.sync' -> 'probes'; None for anything outside flatline's parts."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "flatline" and pieces[1] in ALLOWED else None


def flatline_files(root: Path):
    """(part, folder, path, module parts, package parts) for every .py file of flatline's parts."""
    for part, folder in part_folders(root).items():
        for path in sorted(folder.rglob("*.py")):
            module = module_name(path, part, folder)
            package = module if path.name == "__init__.py" else module[:-1]
            yield part, folder, path, module, package


def layer_violations(root: Path) -> list[str]:
    """Every import that crosses a layer the wrong way, as 'file:line: part imports module'."""
    problems = []
    for owner, _, path, _, package in flatline_files(root):
        crossed = {}  # line -> the first module named there that crosses a layer
        for line, module in imported_modules(path, package):
            target = part_of(module)
            if target is not None and target != owner and target not in ALLOWED[owner]:
                crossed.setdefault(line, module)
        problems += [f"{path.relative_to(root)}:{line}: {owner} imports {module}" for line, module in crossed.items()]
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Circles among the imports flatline's modules run at load time, each as the list of modules around it."""
    files = list(flatline_files(root))
    modules = {".".join(module) for *_, module, _ in files}
    graph = {}
    for _, _, path, module, package in files:
        name = ".".join(module)
        targets = set()
        for _, imported in imported_modules(path, package, top_level_only=True):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)  # a package's own parents run first anyway: no circle through them
        graph[name] = targets
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_layer_table_is_read_from_the_design():
    assert ALLOWED["common"] == set() and ALLOWED["trainer"] == {"common"}
    assert ALLOWED["harness"] == set(ALLOWED) - {"harness"}
    assert "harness" not in ALLOWED["integrations"] and "trainer" in ALLOWED["integrations"]


def test_every_part_imports_only_the_layers_below_it():
    assert layer_violations(ROOT) == []


def test_no_import_circles():
    assert import_cycles(ROOT) == []


def test_every_part_has_a_rule():
    parts = {p.name for p in (ROOT / "flatline").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    mapped = {name.split(".")[1] for name in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
              ["package-dir"] if name.count(".") == 1}
    assert parts | mapped <= set(ALLOWED), f"add a layering rule to docs/DESIGN.md for {sorted(parts | mapped - set(ALLOWED))}"


def copy_of_the_tree(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    for folder in {f.relative_to(ROOT).parts[0] for f in part_folders(ROOT).values()}:
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


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
    copy = copy_of_the_tree(tmp_path)
    target = part_folders(copy)[owner] / "__init__.py"
    body = f"def late():\n{statement}\n" if statement.startswith(" ") else statement + "\n"
    target.write_text(target.read_text(encoding="utf-8") + "\n" + body, encoding="utf-8")
    problems = layer_violations(copy)
    where = target.relative_to(copy).as_posix()
    assert len(problems) == 1 and problems[0].startswith(f"{where}:"), problems


def test_an_import_circle_is_caught(tmp_path):
    copy = copy_of_the_tree(tmp_path)
    (part_folders(copy)["common"] / "zz_a.py").write_text("from flatline.common import zz_b\n")
    (part_folders(copy)["common"] / "zz_b.py").write_text("from . import zz_a\n")
    assert import_cycles(copy) == [["flatline.common.zz_a", "flatline.common.zz_b", "flatline.common.zz_a"]]


def test_a_users_own_trainer_probes_and_diagnostics_modules_do_not_shadow_flatline(tmp_path):
    """Training projects often hold a trainer.py; importing flatline from inside one must still work."""
    for name in ("trainer", "probes", "diagnostics", "harness", "common"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('the user module was imported')\n")
    code = ("import flatline.probes, flatline.diagnostics.judge, flatline.trainer.config, flatline.harness.cli; "
            "from flatline.probes import attach; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
