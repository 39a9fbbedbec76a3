"""The architecture as DEVELOPERS.md draws it: which stage folder may import which, no import circle, one rule per
concern, and the packaging lists every folder."""

import ast
import re
import tomllib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LIB = PROJECT_ROOT / "DPETResponseLib"

#: Layer -> the layers it may import (besides itself). Top-level modules (entry points, the cohort runner, the
#: Slicer scene adapters) may import any layer. Keep in step with DEVELOPERS.md "Layout".
ALLOWED = {
    "core": set(),
    "io": {"core"},
    "features": {"core", "io"},
    "learn": {"core"},
    "deep": {"core", "io", "learn"},
    "reporting": {"core", "io", "learn"},
    "study": {"core", "io", "features", "learn", "deep", "reporting"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Library modules that ``path`` imports (module-level and inside functions), as absolute names."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "DPETResponseLib":
                continue
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "DPETResponseLib"}
    return found


def _exists(module: str) -> bool:
    path = PROJECT_ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (LIB / parts[1]).is_dir()) else None


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in LIB.rglob("*.py") if "__pycache__" not in p.parts}


def test_every_stage_folder_is_in_the_rule():
    folders = {p.name for p in LIB.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(ALLOWED), folders


def test_stage_folders_import_only_the_layers_below():
    broken = []
    for module, targets in _graph().items():
        layer = _layer(module)
        if layer is None:
            continue  # top level: entry points may import anything
        for target in targets:
            other = _layer(target)
            if other is None and target != "DPETResponseLib":
                broken.append(f"{module} imports the top-level {target}")
            elif other not in (None, layer) and other not in ALLOWED[layer]:
                broken.append(f"{module} ({layer}) imports {target} ({other})")
    assert not broken, "\n".join(sorted(broken))


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph or (nxt in graph and nxt == _package_of(node)):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def _package_of(module: str) -> str:
    return module.rsplit(".", 1)[0]


def _sources():
    return {p.relative_to(LIB).as_posix(): p.read_text() for p in LIB.rglob("*.py") if "__pycache__" not in p.parts}


def test_one_definition_per_rule():
    """One grid comparison, one gatekeeper, one atomic writer, one JSON cleaner, one file hasher, one version
    recorder, one figure saver, one SUV conversion: each defined once, in its module."""
    sources = _sources()
    where = {
        "grid comparison": (r"\w+\.Get(Spacing|Origin|Direction)\(\), *\w+\.Get\1\(\)"
                            r"|allclose\(\w+\.Get(Spacing|Origin|Direction)", "io/geometry.py"),
        "atomic writer": (r"os\.replace\(tmp, path\)", "core/files.py"),
        "JSON cleaner": (r"isinstance\(value, \(np\.floating", "core/files.py"),
        "file hasher": (r"iter\(lambda: \w+\.read\(", "core/files.py"),
        "version recorder": (r"metadata\.version\(", "core/provenance.py"),
        "figure saver": (r"\.savefig\(", "reporting/figures.py"),
        "case gatekeeper": (r"def (check_case|require_case)\b", "io/validation.py"),
        "SUV conversion": (r"RadionuclideTotalDose|PatientWeight", "io/suv.py"),
    }
    for rule, (pattern, home) in where.items():
        found = sorted(name for name, text in sources.items() if re.search(pattern, text))
        assert found == [home], f"{rule}: defined in {found}, expected only in {home}"


def test_packaging_lists_every_folder():
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    folders = {_module_name(p) for p in LIB.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert folders - listed == set(), f"add to [tool.setuptools] packages: {sorted(folders - listed)}"
