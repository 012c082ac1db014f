"""The engine's shape (issue #20 item 3): sub-packages by concern, at most 10 modules at its
top level, each sub-package says what it offers, and the imports between them run only
along the declared arrows (no circles)."""

import ast
from pathlib import Path

import napari_sam2.engine

ENGINE = Path(napari_sam2.engine.__file__).parent

# part -> the parts it may import. The order below is the layering, lowest first:
# validation and io know nothing of the model; frames read through io; weights build the
# model; cache stores features of frames; predict runs the model (Meta's API); prompts hold
# what the user gave; track drives a predictor through a session; segment is segment
# everything; cells builds every-cell tracking on track + segment; batch runs it headless.
ALLOWED = {
    "validation": set(),
    "io": {"validation"},
    "frames": {"io", "validation"},
    "weights": {"validation"},
    "cache": {"frames", "io", "validation", "weights"},
    "predict": {"cache", "frames", "io", "validation", "weights"},
    "prompts": {"frames", "io", "validation"},
    "track": {"predict", "prompts", "frames", "io", "cache", "validation", "weights"},
    "segment": {"predict", "frames", "io", "validation", "weights"},
    "cells": {"track", "segment", "predict", "prompts", "frames", "io", "cache", "validation", "weights"},
    "train": {"cells", "segment", "predict", "prompts", "frames", "io", "cache", "validation", "weights"},
    "batch": {
        "track",
        "cells",
        "segment",
        "predict",
        "prompts",
        "frames",
        "io",
        "cache",
        "validation",
        "weights",
    },
}


def _part(path: Path) -> str:
    rel = path.relative_to(ENGINE).parts
    return rel[0] if len(rel) > 1 else path.stem


def _imports(path: Path) -> set[str]:
    """The engine parts ``path`` imports (absolute imports: the engine uses no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the engine imports absolutely")
        if isinstance(node, ast.ImportFrom) and node.module:
            names = node.module.split(".")
            if names[:2] == ["napari_sam2", "engine"]:
                found |= {names[2]} if len(names) > 2 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[:2] == ["napari_sam2", "engine"] and len(names) > 2:
                    found.add(names[2])
    return found


def test_at_most_ten_modules_at_the_top_of_the_engine():
    top = sorted(p.name for p in ENGINE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 10, top


def test_every_sub_package_says_what_it_offers():
    for package in sorted(p.parent for p in ENGINE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"engine/{package.name}/__init__.py: say what it offers"
        assert package.name in ALLOWED, f"engine/{package.name}: declare its imports in ALLOWED"


def test_imports_between_parts_follow_the_declared_arrows():
    wrong = []
    for path in sorted(ENGINE.rglob("*.py")):
        part = _part(path)
        if part == "__init__":
            continue
        for target in _imports(path) - {part}:
            if target not in ALLOWED.get(part, set()):
                wrong.append(f"engine/{path.relative_to(ENGINE)} imports engine.{target}")
    assert not wrong, "imports outside ALLOWED:\n" + "\n".join(wrong)


def test_the_declared_arrows_have_no_circle():
    seen, done = set(), set()

    def visit(part, chain):
        assert part not in seen or part in done, f"circle: {' -> '.join(chain + [part])}"
        if part in done:
            return
        seen.add(part)
        for target in ALLOWED[part]:
            visit(target, chain + [part])
        done.add(part)

    for part in ALLOWED:
        visit(part, [])


def test_the_engine_imports_nothing_above_it():
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = node.module.split(".")
                if names[0] == "napari_sam2":
                    assert names[1:2] in (["engine"], ["model"], ["errors"]), f"{path}: imports {node.module}"


# modules whose test file is named after what they hold rather than the module
TEST_FILE_OF = {
    "frames/open.py": "test_frames",
    "prompts/prompt_set.py": "test_prompts",
    "batch/track_stack.py": "test_batch",
    # training's parts are tested through a training run (export, LoRA folding, resume)
    "train/export.py": "test_trainer",
    "train/features.py": "test_trainer",
    "train/lora.py": "test_trainer",
    "train/run.py": "test_trainer",
    "train/losses.py": "test_overfit",
}


def test_every_engine_module_has_a_test_file():
    tests_dir = Path(__file__).resolve().parent
    tests = {p.stem for p in tests_dir.rglob("test_*.py")}
    missing = []
    for path in sorted(ENGINE.rglob("*.py")):
        if path.name == "__init__.py" or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(ENGINE).as_posix()
        name, package = path.stem.lstrip("_"), path.parent.name
        wanted = {TEST_FILE_OF[rel]} if rel in TEST_FILE_OF else {f"test_{name}", f"test_{package}_{name}"}
        if not any(t == w or t.startswith(w + "_") for t in tests for w in wanted):
            missing.append(f"engine/{rel}: no {' or '.join(sorted(wanted))}*.py under tests/")
    assert not missing, "\n".join(missing)
