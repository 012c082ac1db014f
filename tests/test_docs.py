"""The docs promise only what exists (#19 item 7).

Every ``--flag`` written after ``napari-sam2 <command>`` in a code span or block of
README.md and docs/*.md must be an option of that command's parser (built from
``napari_sam2.cli``), and every dotted name ``napari_sam2.x.y`` or ``from napari_sam2.x
import y`` must import. A failure names the file, the line and what is missing, so the
doc (not the code) can be fixed.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import re
from pathlib import Path

import pytest

from napari_sam2.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~)")
_SPAN = re.compile(r"`([^`\n]+)`")
_COMMAND = re.compile(r"napari-sam2\s+([A-Za-z][\w-]*|--?[\w-]+)")
_FLAG = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*)")
_DOTTED = re.compile(r"(?<![\w.])napari_sam2(?:\.[A-Za-z_]\w*)+")
_FROM = re.compile(r"from\s+(napari_sam2(?:\.\w+)*)\s+import\s+\(?([\w\s,]+)\)?")


def _code(text: str) -> list[tuple[int, str]]:
    """(line number, code) for each line of a fenced block and each inline code span.

    Lines of a block continued with a trailing backslash are joined, so the flags of a
    command written over several lines stay with it.
    """
    out: list[tuple[int, str]] = []
    in_block = False
    pending: tuple[int, str] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.strip()):
            in_block = not in_block
            continue
        if in_block:
            start, before = pending if pending else (n, "")
            joined = before + " " + line
            if line.rstrip().endswith("\\"):
                pending = (start, joined.rstrip().rstrip("\\"))
            else:
                pending = None
                out.append((start, joined))
        else:
            out.extend((n, span) for span in _SPAN.findall(line))
    return out


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@functools.cache
def _command_names() -> frozenset[str]:
    return frozenset(_subparsers(build_parser()))


def _command_flags(code: str) -> list[tuple[str, list[str]]]:
    """(command, flags after it) for each ``napari-sam2 <command> ...`` in a piece of code.

    An unknown word after ``napari-sam2`` counts as a command only where a command line
    starts (quoted messages such as "napari-sam2 does not load" are prose).
    """
    found = []
    known = _command_names()
    for m in _COMMAND.finditer(code):
        word = m.group(1)
        at_start = re.fullmatch(r"\s*(\$\s*)?|.*(&&|\|\||;|\$\()\s*", code[: m.start()], re.S) is not None
        if not (at_start or word in known or word.startswith("-") or word.isupper()):
            continue
        rest = code[m.end() :]
        # the command ends at a shell separator or a comment
        rest = re.split(r"\s(?:#|&&|\|\|?|;)", " " + rest, maxsplit=1)[0]
        rest = rest.split("napari-sam2", 1)[0]
        flags = _FLAG.findall(rest)
        if word.startswith("-"):
            found.append(("", [word, *flags]))
        else:
            found.append((word, flags))
    return found


def test_every_cli_flag_in_the_docs_exists():
    parser = build_parser()
    commands = _subparsers(parser)
    wrong = []
    for doc in DOCS:
        for n, code in _code(doc.read_text(encoding="utf-8")):
            for command, flags in _command_flags(code):
                if command == "" or command.isupper():  # `napari-sam2 --help`, `napari-sam2 COMMAND --help`
                    known = _options(parser) | {"--help"}
                elif command in commands:
                    known = _options(commands[command])
                else:
                    wrong.append(
                        f"{doc.name}:{n}: `napari-sam2 {command}` is not a command (known: {sorted(commands)})"
                    )
                    continue
                wrong.extend(
                    f"{doc.name}:{n}: `napari-sam2 {command}` has no option {flag}"
                    for flag in flags
                    if flag not in known
                )
    assert not wrong, "\n".join(wrong)


def _resolve(dotted: str) -> str | None:
    """None if ``dotted`` imports (a module, or attributes of the longest importable module); else why not."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return f"{'.'.join(parts[:i])} has no {attr!r}"
            obj = getattr(obj, attr)
        return None
    return "no such module"


def _names(text: str) -> list[tuple[int, str]]:
    out = []
    for n, code in _code(text):
        for m in _FROM.finditer(code):
            module = m.group(1)
            out.extend((n, f"{module}.{name}") for name in re.findall(r"\w+", m.group(2)))
        out.extend((n, name) for name in _DOTTED.findall(code))
    return out


def test_every_dotted_name_in_the_docs_imports():
    wrong = []
    for doc in DOCS:
        for n, name in _names(doc.read_text(encoding="utf-8")):
            why = _resolve(name)
            if why is not None:
                wrong.append(f"{doc.name}:{n}: {name}: {why}")
    assert not wrong, "\n".join(wrong)


# the checkers themselves: they must catch what they are meant to catch


def test_the_flag_checker_sees_flags_in_blocks_spans_and_continued_lines():
    text = "x `napari-sam2 track a b c --nope` y\n```bash\nnapari-sam2 track-all m r --every 10 \\\n  --nope2  # --c\n```\n"
    pieces = [flags for _, code in _code(text) for _, flags in _command_flags(code)]
    assert pieces == [["--nope"], ["--every", "--nope2"]]


def test_the_name_checker_catches_a_missing_name():
    assert _resolve("napari_sam2.engine.io") is None
    assert _resolve("napari_sam2.errors.InputError") is None
    assert _resolve("napari_sam2.engine.io.no_such_thing") is not None
    assert _resolve("napari_sam2.no_such_module") is not None
    assert _names("```python\nfrom napari_sam2.errors import (InputError,\n```") == [
        (2, "napari_sam2.errors.InputError"),
        (2, "napari_sam2.errors"),
    ]


def test_the_offline_messages_carry_the_size_and_sha256_the_docs_promise(tmp_path, monkeypatch):
    """docs/install.md: a missing checkpoint and a failed download both name size and SHA-256."""
    import urllib.error

    from napari_sam2.engine.weights import checkpoints as ck
    from napari_sam2.engine.weights import download as dl

    monkeypatch.setenv(ck.ENV_CHECKPOINT_DIR, str(tmp_path))
    config = "sam2.1_hiera_t"
    info = ck.CHECKPOINTS[config]
    status = ck.checkpoint_status(config)
    assert status.state == "missing"
    assert f"{info.size:,} bytes" in status.message and info.sha256 in status.message

    def urlopen(request, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(dl.urllib.request, "urlopen", urlopen)
    with pytest.raises(ck.CheckpointError) as raised:
        dl.download_checkpoint(config, progress=False)
    message = str(raised.value)
    assert "could not connect" in message
    assert f"{info.size:,} bytes" in message and info.sha256 in message
