"""The layers ARCHITECTURE.md draws hold in the code: read from the import statements themselves."""
import ast
import collections
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sdlab"
GROUND = {"errors", "io", "images", "metrics", "progress", "validation", "trainlog", "grid", "threads"}
CORE = {"models", "spec", "prompts", "samplers", "generate", "denoiser", "prediction", "metadata", "interop", "foreign", "comfyui",
        "reproduce", "control", "adapters", "cost"}
TOP = {"cli", "widgets", "__main__"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports() -> dict[str, set[str]]:
    """Module -> the sdlab modules it imports (at any depth: lazy imports count too)."""
    mods = _modules()
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + [node.module] if node.module else base) if node.level else node.module
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [target, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    edges[mod].add(t)
    return edges


def _layer(mod: str) -> str:
    first = mod.split(".")[1] if "." in mod else ""
    if first in GROUND:
        return "ground"
    if first in CORE:
        return "core"
    if first in TOP:
        return "top"
    return "package" if not first else "lab"


EDGES = _imports()


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in EDGES.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif not state.get(nxt):
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in list(EDGES):
        if not state.get(node):
            visit(node, [])
    assert not cycles, cycles


@pytest.mark.parametrize("layer,allowed", [("ground", {"ground"}), ("core", {"ground", "core"}), ("lab", {"ground", "core", "lab"})])
def test_each_layer_imports_only_itself_and_below(layer, allowed):
    wrong = sorted((m, t) for m, ts in EDGES.items() if _layer(m) == layer for t in ts if _layer(t) not in allowed)
    assert not wrong, wrong


def test_no_lab_imports_the_shapes_world():
    """The shapes world is handed to other labs as data or a metric by the CLI, panels and notebooks."""
    wrong = sorted((m, t) for m, ts in EDGES.items() for t in ts
                   if t.startswith("sdlab.mini") and _layer(m) != "top" and not m.startswith("sdlab.mini"))
    assert not wrong, wrong


def _source() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in ROOT.rglob("*.py")}


def test_no_hidden_state_on_pipelines_and_one_callback_type():
    text = _source()
    assert not [p for p, s in text.items() if "_sdlab_" in s or "sdlab_info" in s]
    assert not [p for p, s in text.items() if re.search(r"\bpipe\w*\.(scheduler|unet|transformer)(\.forward)? = ", s)]
    assert [p.name for p, s in text.items() if re.search(r"^Callback = ", s, re.M)] == ["progress.py"]


def test_user_input_errors_are_sdlab_errors_and_files_stay_small():
    text = _source()
    assert not [p for p, s in text.items() if re.search(r"raise (ValueError|TypeError)\b", s)]
    assert not [(p.name, s.count("\n")) for p, s in text.items() if s.count("\n") > 420]
