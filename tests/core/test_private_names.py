"""No subpackage reaches into another's private (``_underscore``) names: what is shared is public (issue 10, 7)."""

import ast
from pathlib import Path

import gatelab

SRC = Path(gatelab.__file__).parent


def _owner(module: str) -> str:
    """The subpackage (or shared top-level module) a dotted gatelab module belongs to: gatelab.gates.cli -> gates."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_reaches(path: Path, root: Path = SRC) -> list[str]:
    """``file:line what`` for each private name of another subpackage that ``path`` (under ``root``, the gatelab
    folder) imports or reads."""
    rel = path.relative_to(root.parent)
    module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
    here = _owner(module) if path.parent != root else module.split(".")[-1]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found, aliases = [], {}
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if not base.startswith("gatelab"):
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                owner = _owner(target if base == "gatelab" else base)
                if owner == here:
                    continue
                if _private(alias.name) or any(_private(p) for p in base.split(".")):
                    found.append(f"{rel}:{node.lineno} imports {target}")
                aliases[alias.asname or alias.name] = owner
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gatelab.") and _owner(alias.name) != here:
                    if any(_private(p) for p in alias.name.split(".")):
                        found.append(f"{rel}:{node.lineno} imports {alias.name}")
    for node in ast.walk(tree):  # reads like cli._floats, where cli was imported from another subpackage
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _private(node.attr):
            if node.value.id in aliases:
                found.append(f"{rel}:{node.lineno} reads {node.value.id}.{node.attr}")
    return found


def test_no_subpackage_imports_another_subpackages_private_names():
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in private_reaches(path)]
    assert not found, "\n".join(found)


def test_the_check_finds_a_private_reach(tmp_path):
    """The check above can fail: a module of npn that imports gates.cli._floats and reads gates.train._x is found."""
    fake = tmp_path / "gatelab"
    (fake / "npn").mkdir(parents=True)
    (fake / "npn" / "cli.py").write_text(
        "from gatelab.gates.cli import _floats\nfrom gatelab.gates import train\nfrom . import _mine\nx = train._x\n"
    )
    hits = private_reaches(fake / "npn" / "cli.py", root=fake)
    assert [h.split(" ", 1)[1] for h in hits] == ["imports gatelab.gates.cli._floats", "reads train._x"]
