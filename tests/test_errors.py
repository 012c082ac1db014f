"""Every error napari-sam2 raises descends from NapariSam2Error (issue #20 item 4), keeping
the built-in base callers catch."""

import ast
import builtins
from pathlib import Path

import pytest

import napari_sam2
from napari_sam2 import errors

SRC = Path(napari_sam2.__file__).parent
BUILTIN_ERRORS = {
    name
    for name in dir(builtins)
    if isinstance(getattr(builtins, name), type) and issubclass(getattr(builtins, name), BaseException)
}
# raised on purpose as themselves: protocol signals, not errors of ours
ALLOWED = {"NotImplementedError", "AttributeError", "StopIteration", "KeyboardInterrupt", "SystemExit"}


def _raised_name(node: ast.Raise) -> str | None:
    exc = node.exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    return exc.id if isinstance(exc, ast.Name) else None


def test_no_builtin_exception_is_raised_directly():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                name = _raised_name(node)
                if name in BUILTIN_ERRORS and name not in ALLOWED:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}: raise {name}")
    assert not found, "raise one of napari_sam2.errors' classes instead:\n" + "\n".join(found)


def test_every_exception_class_of_the_package_descends_from_the_base():
    import importlib
    import inspect
    import pkgutil

    found = []
    for info in pkgutil.walk_packages(napari_sam2.__path__, "napari_sam2."):
        if "._qt" in info.name or info.name.endswith("__main__"):
            continue  # Qt widgets define no exceptions; __main__ runs the CLI
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            is_ours = cls.__module__ == info.name and issubclass(cls, BaseException)
            if is_ours and not issubclass(cls, errors.NapariSam2Error):
                found.append(f"{info.name}.{cls.__qualname__}")
    assert not found, "add NapariSam2Error as the first base:\n" + "\n".join(found)


@pytest.mark.parametrize("name", errors.__all__)
def test_each_error_is_a_napari_sam2_error_and_keeps_its_builtin_base(name):
    cls = getattr(errors, name)
    assert issubclass(cls, errors.NapariSam2Error)
    if cls is not errors.NapariSam2Error:
        assert any(b in vars(builtins).values() for b in cls.__mro__[2:] if b is not Exception)


def test_a_script_catches_any_package_error_with_the_base():
    from napari_sam2.engine.frames.normalization import Normalizer

    with pytest.raises(errors.NapariSam2Error):
        Normalizer.fit([], channels="nonsense")


def test_unknown_key_error_reads_as_its_message():
    assert (
        str(errors.UnknownKeyError("no variant 'x'; choose one of ..."))
        == "no variant 'x'; choose one of ..."
    )
