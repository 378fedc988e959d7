"""The arrows between the parts (DESIGN.md, README's table of parts), checked on every import statement
of the product's code, at module level, under TYPE_CHECKING and inside functions alike."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "bench", "personas", "plexline", "telephony", "voices")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. telephony.sip.server
    target: str  # the imported module, e.g. agent.contracts.media
    where: str  # file:line

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    source = module_name(path, root)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(source, alias.name, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(source, base, where))
            # `from agent.contracts import events` imports the module agent.contracts.events
            found += [Import(source, f"{base}.{alias.name}", where) for alias in node.names
                      if (root / Path(*f"{base}.{alias.name}".split("."))).with_suffix(".py").is_file()]
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    files = [p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))]
    return [i for path in files for i in imports_of(path, root)]


def against_the_layout(imports: list[Import]) -> list[str]:
    return [str(i) for i in imports if project(i.target) and not within(i.target, *allowed(i.source))]


def project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# What each part may import of the project: the first prefix that matches the importing module wins.
ALLOWED: list[tuple[str, tuple[str, ...]]] = [
    ("agent.contracts", ("agent.contracts", "personas")),
    ("agent.model", ("agent.model", "voices")),  # a stored voice prompt is a leaf's format (voices.prompt)
    ("agent.engine", ("agent.engine", "agent.model", "agent.contracts", "voices")),
    ("agent", ("agent", "personas", "voices")),
    ("telephony", ("telephony", "agent.contracts", "personas")),
    ("personas", ("personas", "voices.released")),  # the names of the released voices, a constant
    ("voices", ("voices",)),
    ("bench", PACKAGES),
    ("plexline", PACKAGES),
]


def allowed(source: str) -> tuple[str, ...]:
    return next(targets for prefix, targets in ALLOWED if within(source, prefix))


def test_every_import_follows_the_arrows():
    wrong = against_the_layout(all_imports())
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def closure(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph.get(name, ())
    return seen


def test_the_control_plane_and_the_contracts_never_reach_torch():
    imports = all_imports()
    graph: dict[str, set[str]] = {}
    for i in imports:
        graph.setdefault(i.source, set()).add(i.target)
    torch_users = {i.source: i for i in imports if within(i.target, "torch", "torchaudio", "safetensors")}
    wrong = []
    for module in sorted(m for m in graph if within(m, "telephony", "agent.contracts", "personas")):
        reached = sorted(m for m in closure(module, graph) if m in torch_users)
        wrong += [f"{module} reaches torch through {torch_users[m]}" for m in reached]
    assert not wrong, "\n".join(wrong)


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (a package's own __init__ aside)."""
    modules = {module_name(p, root) for package in PACKAGES for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for i in all_imports(root):
        if i.target in modules and i.target != i.source and not within(i.source, i.target):
            graph.setdefault(i.source, set()).add(i.target)
    return sorted(sorted(c) for c in strongly_connected(graph) if len(c) > 1)


def test_no_import_cycles_between_modules():
    cycles = import_cycles()
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    found.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_check_names_a_wrong_arrow_with_its_file_and_line(tmp_path):
    (tmp_path / "telephony" / "sip").mkdir(parents=True)
    (tmp_path / "telephony" / "sip" / "server.py").write_text(
        "import asyncio\n\n\ndef later():\n    from agent.engine.clock import CallSlot\n")
    assert against_the_layout(all_imports(tmp_path)) == [
        "telephony/sip/server.py:5: telephony.sip.server imports agent.engine.clock"]


def test_the_check_finds_a_cycle(tmp_path):
    (tmp_path / "telephony").mkdir()
    (tmp_path / "telephony" / "a.py").write_text("from telephony.b import B\n")
    (tmp_path / "telephony" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                 "    from telephony.a import A\n")
    assert import_cycles(tmp_path) == [["telephony.a", "telephony.b"]]


CUDA_ONLY = {"agent.model.cuda_kernels"}  # Triton kernels: CUDA builds of torch bring Triton, the CPU build not


def test_every_module_imports():
    """A module left importing a name from where it used to live fails here, not in production."""
    import importlib
    import pkgutil

    failed = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            if info.name.endswith("__main__") or info.name in CUDA_ONLY:
                continue
            try:
                importlib.import_module(info.name)
            except Exception as error:  # every failure is reported, not only the first
                failed.append(f"{info.name}: {error!r}")
    assert not failed, "\n".join(failed)
