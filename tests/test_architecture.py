"""The package's layers import only downwards (ARCHITECTURE.md): every import of every module, at module level or
inside a function, is walked and checked; and the ``lecl`` command answers ``--help`` without importing MONAI/torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lecl_transforms"

#: the layer of each top-level module/subpackage of lecl_transforms; a module may import its own layer or below
LAYERS = {
    "errors": 0, "utils": 0,
    "data": 1, "transforms": 1, "visualize": 1, "": 1,  # "" = the package root: a facade over layers 0-1
    "networks": 2, "losses": 2,
    "inferers": 3, "engines": 3, "metrics": 3, "handlers": 3,
    "apps": 4, "tools": 4, "__main__": 4,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``path`` (relative ones resolved), anywhere in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from . import functional" imports a submodule: check each name as a module when it is one
            found += [(node.lineno, f"{target}.{alias.name}" if (PACKAGE.parent / Path(*f"{target}.{alias.name}"
                       .split("."))).exists() else target) for alias in node.names]
    return [(line, name) for line, name in found if name == "lecl_transforms" or name.startswith("lecl_transforms.")]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    assert top in LAYERS, f"{module}: add its subpackage to LAYERS (and to ARCHITECTURE.md)"
    return LAYERS[top]


def test_every_module_imports_only_its_own_layer_or_below():
    upward = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40
    for path in modules:
        importer = _module_name(path)
        for line, imported in _imports(path):
            if _layer(imported) > _layer(importer):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({importer}, layer {_layer(importer)}) "
                              f"imports {imported} (layer {_layer(imported)})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_walk_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The checker itself: an import hidden in a function body is found (so the test above can fail)."""
    fake = PACKAGE / "data" / "_probe_upward.py"
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    fake.write_text("def f():\n    from ..tools.cli import main\n    return main\n")
    try:
        assert (2, "lecl_transforms.tools.cli") in _imports(fake)
        with pytest.raises(AssertionError, match="upward imports"):
            test_every_module_imports_only_its_own_layer_or_below()
    finally:
        fake.unlink()


def test_lecl_help_imports_neither_monai_nor_torch():
    """``lecl --help`` and ``lecl <command> --help`` answer without loading the heavy libraries (their timing is in
    benchmarks/bench_cli_help.py)."""
    code = ("import sys; from lecl_transforms.tools.cli import build_parser; p = build_parser()\n"
            "for cmd in ([], ['synth'], ['prepare'], ['predict'], ['evaluate'], ['demo']):\n"
            "    try: p.parse_args(cmd + ['--help'])\n"
            "    except SystemExit: pass\n"
            "heavy = sorted(m for m in ('torch', 'monai', 'sklearn', 'skimage', 'mlflow', 'ignite')\n"
            "               if m in sys.modules)\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []"
