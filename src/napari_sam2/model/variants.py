"""The 8 official SAM 2 / SAM 2.1 variants and the one resolver of their names.

Meta spells a variant several ways: the config name (``sam2.1_hiera_t``), its YAML path
(``configs/sam2.1/sam2.1_hiera_t.yaml``), the checkpoint file (``sam2.1_hiera_tiny.pt``),
the long form (``sam2.1_hiera_tiny``) and the Hugging Face id
(``facebook/sam2.1-hiera-tiny``). Everything that takes a variant name goes through
:func:`resolve_variant`.
"""

from __future__ import annotations

import re

from napari_sam2.errors import InputError, InputTypeError

#: size letter -> the word Meta's checkpoint files use
SIZE_WORDS = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}

#: the official variants, SAM 2.1 first, smallest first
VARIANTS: tuple[str, ...] = tuple(
    f"{family}_hiera_{size}" for family in ("sam2.1", "sam2") for size in SIZE_WORDS
)

_LONG_TO_SHORT = {
    f"{family}_hiera_{word}": f"{family}_hiera_{size}"
    for family in ("sam2.1", "sam2")
    for size, word in SIZE_WORDS.items()
}


def checkpoint_stem(variant: str) -> str:
    """Meta's checkpoint file name without ``.pt``: ``sam2.1_hiera_t`` -> ``sam2.1_hiera_tiny``."""
    family, size = resolve_variant(variant).split("_hiera_")
    return f"{family}_hiera_{SIZE_WORDS[size]}"


def resolve_variant(name: str) -> str:
    """Meta's config name (one of :data:`VARIANTS`) for any of Meta's spellings of it."""
    if not isinstance(name, str):
        raise InputTypeError(f"a model variant name must be a string, not {type(name).__name__}")
    text = name.strip()
    key = text.replace("\\", "/").rsplit("/", 1)[-1]
    if text.startswith("facebook/"):
        key = key.replace("-hiera-", "_hiera_").replace("base-plus", "base_plus")
    key = re.sub(r"\.(ya?ml|pt|pth)$", "", key)
    key = _LONG_TO_SHORT.get(key, key)
    if key in VARIANTS:
        return key
    raise InputError(f"unknown SAM 2 model variant {name!r}; choose one of: {', '.join(VARIANTS)}")
