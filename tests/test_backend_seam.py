"""The backend is the unit of variation (issue 24, item 1), checked without a kernel.

- No module outside xdphooks/backends/ names a backend: a string literal equal to a
  mode name would be a branch on it. Views and the coordinator ask the backend of a
  record or chain (backends.of / backends.get) instead.
- Each registered backend implements the whole seam (build, attach, observe, predict).
- No import cycle: none at import time anywhere in the package, and — counting the
  imports made inside functions too — none of the circles issue 24 named (status →
  profile → fexit → status, backends.freplace ↔ probe, model → backends), and no
  backend module reaches a view, the coordinator or the CLI.
- Every module imports on its own, in a fresh interpreter, without a circular-import
  error.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from xdphooks import backends

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "xdphooks"
BACKENDS = PKG / "backends"

#: strings outside backends/ that suggest a mode to the admin (a fix hint), with why
#: they stay where they are; every entry must still be needed
SUGGESTIONS_ALLOWED = {
    ("xdphooks/kernel/errnos.py", "static"):
        "the one table of errno sentences and fixes: a refused freplace link or "
        "trampoline suggests the backend that needs neither; kernel/ is below backends/",
    ("xdphooks/kernel/errnos.py", "freplace"):
        "the same table: a program over the kernel's map limit suggests the backend that "
        "loads each component as a program of its own",
    ("xdphooks/link/rewrite.py", "freplace"):
        "the fix hint of the static backend's GPL precondition, raised where the object's "
        "licence is read; link/ is below backends/ and must not import it",
}


def _sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _outside_backends() -> list[Path]:
    return [p for p in _sources() if BACKENDS not in p.parents]


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


def test_no_mode_literal_outside_backends():
    names = set(backends.NAMES)
    assert names, "the registry names no backend"
    found = []
    for path in _outside_backends():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{_rel(path)}:{node.lineno}: {node.value!r}")
    assert not found, ("mode names outside xdphooks/backends/ (ask the backend of the "
                       "record or chain instead: backends.of(rec), backends.get(mode)):\n"
                       + "\n".join(found))


def test_mode_suggestions_outside_backends_are_the_allowed_ones():
    seen = set()
    for path in _outside_backends():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in backends.NAMES:
                    if f'mode = "{name}"' in node.value or f'mode="{name}"' in node.value:
                        seen.add((_rel(path), name))
    assert seen == set(SUGGESTIONS_ALLOWED), (
        f"new: {sorted(seen - set(SUGGESTIONS_ALLOWED))}; "
        f"stale allow-list entries: {sorted(set(SUGGESTIONS_ALLOWED) - seen)}")


SEAM = ("usable", "build", "swap", "detach", "attached_id", "slot_prog_id", "link_kind",
        "trace_target", "running_globals", "predict_links", "kernel_probe")
MUST_OVERRIDE = ("usable", "build", "link_kind", "trace_target", "running_globals")


def test_every_backend_implements_the_whole_seam():
    assert backends.FALLBACK in backends.NAMES
    for name in backends.NAMES:
        b = backends.get(name)
        assert isinstance(b, backends.Backend) and b.MODE == name
        assert (PKG / "backends" / f"{name}.py").is_file(), f"{name}: one module per backend"
        for m in SEAM:
            assert callable(getattr(b, m)), f"{name}: no {m}()"
        missing = [m for m in MUST_OVERRIDE
                   if getattr(type(b), m) is getattr(backends.Backend, m)]
        assert not missing, f"backend {name} leaves {missing} to the base (NotImplemented)"


def test_backend_of_a_record_and_what_each_says_without_a_kernel(tmp_path):
    from xdphooks.state import InterfaceRecord, ProgramRecord
    from xdphooks.status import link_kind

    p = ProgramRecord("fw", "plug-fw", 10, {}, "/x.o", "xdp_fw", "0" * 64, 7, 0)
    for name in backends.NAMES:
        rec = InterfaceRecord("", "veth0", 3, name, 9, "f" * 16, 1, "/nonexistent", "native",
                              [p])
        b = backends.of(rec)
        assert b is backends.get(name)
        assert link_kind(rec, p) == b.link_kind(p) != ""
        assert b.slot_prog_id(tmp_path, "fw") == 0  # nothing pinned there
    assert backends.of(None) is backends.get(backends.FALLBACK)


# --- imports -------------------------------------------------------------------------


def _modname(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, mods: set[str], lazy: bool) -> set[str]:
    """xdphooks modules ``path`` imports: at import time, or (``lazy``) anywhere,
    functions included; never what only ``if TYPE_CHECKING:`` imports."""
    me = _modname(path)
    base = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    out: set[str] = set()

    def add(name: str) -> None:
        parts = name.split(".")
        for i in range(2, len(parts) + 1):  # a submodule's packages are imported first
            if ".".join(parts[:i]) in mods:
                out.add(".".join(parts[:i]))

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for c in child.orelse:
                    visit_one(c)
                continue
            visit_one(child)

    def visit_one(child: ast.AST) -> None:
        if isinstance(child, ast.Import):
            for a in child.names:
                add(a.name)
        elif isinstance(child, ast.ImportFrom):
            target = child.module or ""
            if child.level:
                target = ".".join(base[:len(base) - child.level + 1] + ([target] if target else []))
            for a in child.names:
                add(f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target)
        if lazy or not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    out.discard(me)
    return out


def _graph(lazy: bool) -> dict[str, set[str]]:
    files = {_modname(p): p for p in _sources()}
    return {m: _imports(p, set(files), lazy) for m, p in files.items()}


def _reach(g: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in g[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_at_import_time():
    assert _cycles(_graph(lazy=False)) == []


def test_the_circles_issue_24_named_are_gone():
    g = _graph(lazy=True)
    assert "xdphooks.status" not in _reach(g, "xdphooks.fexit"), \
        "fexit reaches status again (status → profile → fexit → status)"
    assert not (PKG / "probe.py").exists(), "the freplace probe lives in backends/"
    assert "xdphooks.backends.freplace" not in _reach(g, "xdphooks.backends.freplace_probe"), \
        "the freplace probe reaches freplace again (backends.freplace ↔ probe)"
    assert not any(m.startswith("xdphooks.backends") for m in g["xdphooks.model"]), \
        "model imports from backends again (Mode and Choice are model vocabulary)"
    assert "xdphooks.backends" not in g["xdphooks.planner"], \
        "the pure planner takes Mode and Choice from the model, not from the backends"


def test_backends_reach_no_view_coordinator_or_cli():
    """The seam points one way: views and the coordinator ask backends, never back."""
    g = _graph(lazy=True)
    above = {f"xdphooks.{m}" for m in ("status", "profile", "fexit", "livetrace", "trace",
                                        "capabilities", "doctor", "coordinator", "cli",
                                        "watchlease", "metrics", "drift", "planner")}
    bad = {m: sorted(_reach(g, m) & above) for m in g
           if m.startswith("xdphooks.backends") and _reach(g, m) & above}
    assert not bad, bad


def test_every_module_imports_standalone_in_a_fresh_interpreter():
    mods = sorted(_modname(p) for p in _sources() if p.name != "__main__.py")
    script = (
        "import importlib, json, sys\n"
        "bad = {}\n"
        "for m in json.loads(sys.argv[1]):\n"
        "    for k in [k for k in sys.modules if k == 'xdphooks' or k.startswith('xdphooks.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        bad[m] = f'{type(e).__name__}: {e}'\n"
        "print(json.dumps(bad))\n")
    r = subprocess.run([sys.executable, "-c", script, json.dumps(mods)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    bad = json.loads(r.stdout.strip().splitlines()[-1])
    assert not bad, "\n".join(f"{m}: {e}" for m, e in bad.items())
