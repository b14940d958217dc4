"""The package's structure, read statically from its source: no import cycles (not even
through imports inside functions), and every exception class lives in ``errors.py``."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "spacy_llama"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: Set[str]) -> Set[str]:
    """The package modules ``path`` imports anywhere in its body (module level, functions,
    TYPE_CHECKING blocks), resolved to the deepest known module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            resolved = _deepest(target, known)
            if resolved is not None and resolved != here:
                out.add(resolved)
    return out


def _deepest(name: str, known: Set[str]) -> Optional[str]:
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def import_graph() -> Dict[str, Set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, known) for f in files}


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}  # 1 on the stack, 2 done
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "spacy_llama.batch.local" in graph and graph["spacy_llama.batch.local"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_sees_imports_inside_functions(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    source = tmp_path / "spacy_llama" / "x.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from .y import g\n", encoding="utf-8")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "spacy_llama"
    try:
        assert imported_modules(source, {"spacy_llama.x", "spacy_llama.y"}) == {"spacy_llama.y"}
    finally:
        PACKAGE = saved


def test_exception_classes_live_in_the_catalogue() -> None:
    """One catalogue (as spaCy's errors.py): no module defines its own user-facing error."""
    # an HTTP exchange's retry signal, internal
    allowed = {("models/server/transport.py", "ServerError")}
    stray = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith("Error") or b.id == "Exception")
                for b in node.bases
            ):
                if (rel, node.name) not in allowed:
                    stray.append(f"{rel}:{node.name}")
    assert stray == []


BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def builtin_raises_of_coded_messages(source: str) -> List[str]:
    """``raise ValueError(Errors.E...)`` and the like: a coded message raised through a
    builtin exception instead of one of the catalogue's classes (the CLI reports only
    those as one line and an exit code)."""
    found: List[Tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        func = node.exc.func
        if not (isinstance(func, ast.Name) and func.id in BUILTIN_EXCEPTIONS):
            continue
        codes = [
            f"{sub.value.id}.{sub.attr}"
            for sub in ast.walk(node.exc)
            if isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Name)
            and sub.value.id in ("Errors", "Warnings")
        ]
        if codes:
            found.append((node.lineno, f"{node.lineno}: {func.id}({', '.join(codes)})"))
    return [text for _, text in sorted(found)]


def test_coded_errors_are_raised_through_the_catalogue_classes() -> None:
    stray = [
        f"{path.relative_to(PACKAGE).as_posix()}:{hit}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for hit in builtin_raises_of_coded_messages(path.read_text(encoding="utf-8"))
    ]
    assert stray == []


def test_the_coded_raise_check_sees_builtins_and_passes_catalogue_classes() -> None:
    source = (
        "def f(x):\n"
        "    if x:\n"
        "        raise ValueError(Errors.E001.format(path=x)) from None\n"
        "    raise RuntimeError(f'{Warnings.W001}')\n"
        "def g():\n"
        "    raise CorpusError(Errors.E001)\n"
        "def h():\n"
        "    raise ValueError('not coded')\n"
    )
    assert builtin_raises_of_coded_messages(source) == [
        "3: ValueError(Errors.E001)",
        "4: RuntimeError(Warnings.W001)",
    ]
