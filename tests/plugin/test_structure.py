"""The plugin's structure facts (#20, item 1), read from its source: no class over 600 lines
or 45 members (its bases in the package included), no mixins, no mutable class attributes;
and the annotator's scripted API from before its parts had names still works, deprecated
with a message naming the new spelling.

Members are what a reader must hold in mind: methods, class attributes and the ``self.x``
attributes the methods assign, of the class and of its bases defined in this package
(Qt's and psygnal's bases are not counted: they are libraries, not this code's state).
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

import napari_sam2

PACKAGE = Path(napari_sam2.__file__).parent
PLUGIN = PACKAGE / "plugin"
MAX_LINES, MAX_MEMBERS = 600, 45
MUTABLE_CALLS = {"list", "dict", "set", "defaultdict", "deque", "OrderedDict", "Counter", "bytearray"}


@dataclass
class ClassInfo:
    module: str
    node: ast.ClassDef
    imports: dict[str, tuple[str, str]]  # local name -> (module, name) of `from x import y`

    @property
    def name(self) -> str:
        return f"{self.module}.{self.node.name}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _all_classes() -> dict[tuple[str, str], ClassInfo]:
    """Every top-level class of the package (plugin's and the bases it may use elsewhere)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module, tree = _module_name(path), ast.parse(path.read_text(encoding="utf-8"))
        imports = {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                src = _absolute(module, node, path.name == "__init__.py")
                imports.update({a.asname or a.name: (src, a.name) for a in node.names})
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                found[(module, node.name)] = ClassInfo(module, node, imports)
    return found


CLASSES = _all_classes()
PLUGIN_CLASSES = [c for c in CLASSES.values() if c.module.startswith("napari_sam2.plugin")]


def _own_members(node: ast.ClassDef) -> set[str]:
    names = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(item.name)
            for n in ast.walk(item):
                targets = n.targets if isinstance(n, ast.Assign) else []
                if isinstance(n, ast.AnnAssign | ast.AugAssign):
                    targets = [n.target]
                for t in targets:
                    names.update(
                        e.attr
                        for e in ast.walk(t)
                        if isinstance(e, ast.Attribute)
                        and isinstance(e.value, ast.Name)
                        and e.value.id == "self"
                    )
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
    return names


def _package_bases(info: ClassInfo) -> list[ClassInfo]:
    """The class's bases defined in this package, and theirs."""
    out = []
    for base in info.node.bases:
        if not isinstance(base, ast.Name):
            continue
        key = (info.module, base.id) if (info.module, base.id) in CLASSES else info.imports.get(base.id)
        if key in CLASSES:
            out += [CLASSES[key], *_package_bases(CLASSES[key])]
    return out


def _size(info: ClassInfo) -> tuple[int, int]:
    """(lines, members) of the class with its package bases."""
    chain = [info, *_package_bases(info)]
    lines = sum(c.node.end_lineno - c.node.lineno + 1 for c in chain)
    members = set().union(*(_own_members(c.node) for c in chain))
    return lines, len(members)


def test_the_plugin_has_its_classes():
    # the measure reads what it should: the facade and its parts are there, with sizes
    names = {c.node.name for c in PLUGIN_CLASSES}
    assert {"Annotator", "Runs", "CellsWorkflow", "PromptModel", "SAM2Widget", "Panel"} <= names
    ann = next(c for c in PLUGIN_CLASSES if c.node.name == "Annotator")
    lines, members = _size(ann)
    assert lines > 100 and members > 20


@pytest.mark.parametrize("info", PLUGIN_CLASSES, ids=lambda c: c.name)
def test_no_class_over_600_lines_or_45_members_bases_included(info):
    lines, members = _size(info)
    assert lines <= MAX_LINES, f"{info.name}: {lines} lines (bases included); split it into parts"
    assert members <= MAX_MEMBERS, f"{info.name}: {members} members (bases included); split it into parts"


@pytest.mark.parametrize("info", PLUGIN_CLASSES, ids=lambda c: c.name)
def test_no_mixins(info):
    # one base at most: a class is composed of parts it owns, not assembled from mixins
    assert len(info.node.bases) <= 1, f"{info.name} has bases {[ast.unparse(b) for b in info.node.bases]}"
    assert not info.node.name.endswith("Mixin"), info.name


def _mutable(value: ast.AST | None) -> bool:
    if isinstance(value, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return name in MUTABLE_CALLS
    return False


@pytest.mark.parametrize("info", PLUGIN_CLASSES, ids=lambda c: c.name)
def test_no_mutable_class_attributes(info):
    # a list or dict on the class is shared by every instance (the bug of _loaded_corrections)
    bad = [
        ast.unparse(item)
        for item in info.node.body
        if isinstance(item, ast.Assign | ast.AnnAssign) and _mutable(item.value)
    ]
    assert not bad, f"{info.name}: mutable class attributes {bad}; set them in __init__"


def test_the_measure_finds_what_it_forbids():
    # the checks above can fail: a mixin, a shared list and a big class are all seen
    tree = ast.parse(
        "class A:\n    x = []\n    y: dict = {}\n    z = list()\n    ok = ()\n"
        "class B(A, C):\n    def f(self):\n        self.a = self.b = 1\n"
    )
    a, b = tree.body
    assert [_mutable(i.value) for i in a.body] == [True, True, True, False]
    assert len(b.bases) == 2 and _own_members(b) == {"f", "a", "b"}


# ----------------------------------------------------------------------------- the scripted API

# The Annotator's public names before its parts had names (its mixins' included): each still
# works, directly or deprecated with the new spelling.
OLD_PUBLIC_API = [
    "add_box",
    "add_mask_prompt",
    "add_point",
    "boxes_layer",
    "busy",
    "cancel",
    "channels",
    "checkpoint_status",
    "clear_mask_prompts",
    "current_frame",
    "discard_edits",
    "download_checkpoint",
    "events",
    "export_tracks",
    "feature_fill",
    "fill_features",
    "geometry",
    "image_layer",
    "image_layers",
    "labels",
    "labels_layers",
    "last_error",
    "last_outcome",
    "last_status",
    "lineage_layer",
    "load_prompts",
    "new_object",
    "obj_id",
    "output_layer",
    "outputs",
    "points_layer",
    "positive",
    "preview",
    "prompt_layers",
    "prompts",
    "propagate",
    "reset",
    "runner",
    "save_prompts",
    "seeds_layer",
    "segment_everything",
    "session",
    "set_cells",
    "set_channel_axis",
    "set_channels",
    "set_fill_features",
    "set_image",
    "set_live_preview",
    "set_model",
    "set_object",
    "set_output",
    "set_positive",
    "set_propagation_axis",
    "set_tracking",
    "settings",
    "stack_info",
    "stop_feature_fill",
    "synchronous",
    "toggle_positive",
    "track_all_cells",
    "track_graph",
    "tracks_layer",
    "use_edits_as_corrections",
    "use_mask_generator",
    "use_predictor",
    "user_edits",
    "variants",
    "viewer",
    "wait",
]


@pytest.fixture
def annotator():
    from napari.components import ViewerModel

    from napari_sam2.plugin.annotator import Annotator

    return Annotator(ViewerModel(), synchronous=True)


def test_the_old_scripting_api_is_kept_or_deprecated_naming_the_new_spelling(annotator):
    from napari_sam2.plugin.annotator import MOVED, resolve

    for name in OLD_PUBLIC_API:
        if name in MOVED:
            new = MOVED[name]
            with pytest.warns(
                DeprecationWarning, match=rf"Annotator\.{name} is deprecated: use Annotator\.{new}"
            ):
                old = getattr(annotator, name)
            assert old == resolve(annotator, new), name
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                getattr(annotator, name)  # kept as it was: no warning
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        annotator.no_such_name  # noqa: B018 - an unknown name is still an error


def test_the_widget_offers_the_scripted_api_without_deprecated_names(annotator):
    from napari_sam2.plugin.annotator import resolve

    widget_module = pytest.importorskip("napari_sam2.plugin._qt.widget", exc_type=ImportError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the widget's names resolve to the new spellings
        for name, where in widget_module._DELEGATED.items():
            resolve(annotator, where)
            assert name in OLD_PUBLIC_API or name in dir(annotator), name


def test_the_user_guides_scripted_api_exists(annotator):
    """Every method the user guide's "Scripted sessions" section calls on the widget (``sam``)
    or on ``annotator.<part>`` is there, under that name, without a deprecation warning."""
    import re

    from napari_sam2.plugin.annotator import resolve

    widget_module = pytest.importorskip("napari_sam2.plugin._qt.widget", exc_type=ImportError)
    guide = (Path(__file__).resolve().parents[2] / "docs" / "user-guide.md").read_text(encoding="utf-8")
    section = guide.split("## Scripted sessions", 1)[1].split("\n## ", 1)[0]
    on_widget = set(re.findall(r"\bsam\.([a-z_]+)", section))
    for row in re.findall(r"^\| (.+?) \|", section, flags=re.M):
        on_widget |= set(re.findall(r"`([a-z_]+)\(", row))
    on_annotator = set(re.findall(r"\bannotator\.([a-z_]+(?:\.[a-z_]+)*)", section))
    assert {"preview", "propagate", "set_image_layer", "segment_everything"} <= on_widget
    widget = widget_module.SAM2Widget
    missing = sorted(
        n for n in on_widget - {"annotator"} if n not in widget_module._DELEGATED and not hasattr(widget, n)
    )
    assert not missing, f"the user guide calls sam.{missing} that the widget does not have"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dotted in on_annotator - {"events"}:
            if dotted.startswith("events."):
                getattr(annotator.events, dotted.split(".")[1])
            elif dotted not in ("geometry",):  # named in the guide as the old spelling
                resolve(annotator, dotted)
