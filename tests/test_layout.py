"""The library's structure: imports flow one way (no cycles, no module importing a layer above its own)."""

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "attnlab"

# docs/design.md, "Layers": a module may import its own layer and those below
LAYERS = [
    ("errors", "registry", "io", "environment", "stats"),
    ("config",),
    ("positional", "attention", "tasks", "parallel"),
    ("model", "data", "train", "evaluate", "analysis", "plots", "passkey", "hf", "memo"),
    ("claims", "bench"),
    ("experiments",),
    ("session", "runner", "report", "compare", "cluster", "sweep", "cli", "__main__", ""),
]


def modules() -> dict[str, Path]:
    out = {}
    for p in LIB.rglob("*.py"):
        parts = list(p.relative_to(LIB).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["attnlab", *parts])] = p
    return out


MODS = modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Every attnlab module imported anywhere in the file (module level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODS}
            found |= subs if len(subs) == len(node.names) else subs | {mod}
    return {m for m in found if m.split(".")[0] == "attnlab" and m != name}


GRAPH = {m: imports_of(m, p) for m, p in MODS.items()}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not in any layer of LAYERS (docs/design.md)")


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH.get(m, ())):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(MODS))
def test_imports_flow_downward(module):
    up = sorted(n for n in GRAPH[module] if layer(n) > layer(module))
    assert not up, f"{module} (layer {layer(module)}) imports a layer above it: {up}"


def test_config_and_claims_know_no_experiment_or_model():
    assert not {m for m in GRAPH["attnlab.config"] if m.startswith(("attnlab.experiments", "attnlab.model"))}
    assert not {m for m in GRAPH["attnlab.claims"] if m.startswith("attnlab.experiments")}


def test_the_checker_finds_a_cycle(tmp_path, monkeypatch):
    """The walk above can fail: an edge back up the graph is reported as a cycle."""
    monkeypatch.setitem(GRAPH, "attnlab.errors", GRAPH["attnlab.errors"] | {"attnlab.config"})
    with pytest.raises(pytest.fail.Exception, match="import cycle: .*attnlab.config"):
        test_no_import_cycles()


def test_no_hand_written_native_code():
    native = [p for p in LIB.rglob("*") if p.suffix in (".c", ".cc", ".cpp", ".cu", ".h", ".hpp")]
    assert not native
    assert "cpp_extension" not in "".join(p.read_text() for p in LIB.rglob("*.py"))
