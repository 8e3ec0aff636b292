"""usp_core's shape: arrows only downward between its modules, each module importable alone.

The import graph is read from the source (every ``import`` and ``from ... import`` of a usp_core module,
at module level and inside functions), an edge to the module a statement names: ``from usp_core.x
import y`` is an edge to usp_core.x.y when that is a module, else to usp_core.x. Python also runs the
``__init__`` of every package above a module it imports; those implicit edges are not in the graph
(a package's ``__init__`` may name its own submodules, as usp_core.models does).
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "usp_core"

# Function-level imports of usp_core modules that are there on purpose: the lazy public names of
# usp_core and usp_core.inference, which keep `import usp_core.inference.features` torch-free.
LAZY = {("usp_core", "usp_core.inference"), ("usp_core.inference", "usp_core.inference.detector"),
        ("usp_core.inference", "usp_core.inference.weights"), ("usp_core.inference", "usp_core.inference.features")}
# Modules that must not load torch (usp_ros's image_source node and message bridge import them).
TORCH_FREE = ["usp_core", "usp_core.support.errors", "usp_core.support.atomic", "usp_core.support.image_files",
              "usp_core.support.frame_queue", "usp_core.support.drawing", "usp_core.geometry.match_result",
              "usp_core.inference.features", "usp_core.synthetic.virtual_camera", "usp_core.synthetic.sequence"]


def module_names() -> dict[str, Path]:
    """Dotted name -> file of every module and package of usp_core."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported usp_core module, whether the import is inside a function) for each import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - child.level + 1] + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in child.names]
            else:
                visit(child, inner)
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("usp_core"):
                    found.append((target, in_function))

    visit(tree, False)
    return found


def graph() -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """(module -> modules it imports, (module, module) pairs imported inside a function)."""
    modules = module_names()
    edges, in_functions = {}, set()
    for name, path in modules.items():
        edges[name] = set()
        for target, in_function in imports(name, path, modules):
            if target != name:
                edges[name].add(target)
            if in_function:
                in_functions.add((name, target))
    return edges, in_functions


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_graph_has_no_import_circle():
    edges, _ = graph()
    assert len(edges) > 40 and "usp_core.models.superpoint" in edges
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_networks_import_neither_checkpoints_nor_inference_nor_training():
    edges, _ = graph()
    for network in ("usp_core.models.unsuperpoint", "usp_core.models.superpoint", "usp_core.models.build"):
        below = reachable(edges, network)
        assert not {m for m in below if m.startswith(("usp_core.inference", "usp_core.training"))}, network
        assert "usp_core.support.checkpoint" not in below, network


def test_rooms_only_import_downward():
    """support < models < inference < geometry < training < evaluation < cli; synthetic beside geometry."""
    order = ["support", "models", "inference", "geometry", "synthetic", "training", "evaluation", "cli"]
    allowed = {room: set(order[:index + 1]) for index, room in enumerate(order)}
    allowed["synthetic"] = {"support", "inference", "synthetic"}
    edges, _ = graph()
    wrong = []
    for source, targets in edges.items():
        parts = source.split(".")
        if len(parts) < 2 or parts[1] not in allowed:
            continue
        for target in targets:
            room = target.split(".")[1] if target.count(".") else "usp_core"
            if room != "weights" and room not in allowed[parts[1]]:
                wrong.append(f"{source} -> {target}")
    assert not wrong


def test_function_level_imports_are_only_the_lazy_public_names():
    _, in_functions = graph()
    assert in_functions == LAZY


def test_no_usp_core_module_imports_ros():
    ros = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            ros += [f"{path.name}: {name}" for name in names if name.split(".")[0] in ("rclpy", "usp_ros")]
    assert not ros


def test_each_module_imports_alone():
    """Every module in a fresh child process (forked after the third-party imports, to stay fast)."""
    script = textwrap.dedent("""
        import importlib, os, sys
        import cv2, numpy, torch, yaml  # third-party, loaded once before the forks
        failures = []
        for name in sys.argv[1:]:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException as error:
                    print(f"{name}: {type(error).__name__}: {error}", flush=True)
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if status:
                failures.append(name)
        sys.exit(1 if failures else 0)
    """)
    names = sorted(module_names())
    result = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_torch_free_modules_do_not_load_torch():
    script = ("import importlib, sys\n"
              "for name in sys.argv[1:]:\n"
              "    importlib.import_module(name)\n"
              "    assert 'torch' not in sys.modules, name\n"
              "import usp_core\n"
              "assert usp_core.__all__ and 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", script, *TORCH_FREE], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_public_entry_points():
    from usp_core import KeypointDetector
    from usp_core.inference import DetectorConfig, Features
    from usp_core.inference import KeypointDetector as same
    from usp_core.inference.detector import KeypointDetector as defined

    assert KeypointDetector is same is defined and DetectorConfig().max_keypoints and Features


def test_readme_layout_names_every_room_and_module():
    text = (ROOT / "README.md").read_text()
    block = text[text.index("\n    usp_core/ "):text.index("\n    usp_ros/ ")]
    entries, room = {}, None
    for line in block.splitlines()[2:]:
        name = line[6:].split(" ", 1)[0]
        if line.startswith("      ") and name.endswith("/"):
            room = name.rstrip("/")
            entries[room] = line[6 + len(name):]
        elif room:
            entries[room] += " " + line.strip()
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert set(entries) == folders
    missing = [f"{room}/{path.stem}" for room in folders - {"weights"} for path in (PACKAGE / room).iterdir()
               if path.stem not in ("__init__", "__pycache__") and not re.search(rf"\b{path.stem}\b", entries[room])]
    assert not missing
