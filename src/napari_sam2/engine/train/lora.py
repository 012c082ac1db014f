"""Low-rank adapters (LoRA) on the image encoder's attention, merged back for export.

``W x + (alpha / r) * B A x`` with ``A`` (r x in) drawn small and ``B`` (out x r) zero, so
an adapted model starts exactly as the base model. Adapters wrap Hiera's ``qkv`` and
``proj`` linears; :func:`merged_state_dict` folds them into plain weights, so the exported
checkpoint has the official keys and loads into an unmodified model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_sam2.errors import InputError


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise InputError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.scale = (alpha if alpha is not None else rank) / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as the LoRA paper's reference code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + (self.lora_b @ self.lora_a) * self.scale


def add_lora(module: nn.Module, rank: int = 4, targets: tuple[str, ...] = ("qkv", "proj")) -> list[str]:
    """Wrap every linear named in ``targets`` inside ``module``'s attention blocks; returns their names."""
    wrapped = []
    for name, child in list(module.named_modules()):
        for attr in targets:
            lin = getattr(child, attr, None)
            if isinstance(lin, nn.Linear) and type(child).__name__ == "MultiScaleAttention":
                setattr(child, attr, LoRALinear(lin, rank))
                wrapped.append(f"{name}.{attr}" if name else attr)
    if not wrapped:
        raise InputError(f"no attention linears named {targets} found to adapt")
    return wrapped


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every adapter folded in, under the original key names."""
    sd = {}
    lora_prefixes = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    for key, value in model.state_dict().items():
        owner = next((p for p in lora_prefixes if key.startswith(p + ".")), None)
        if owner is None:
            sd[key] = value.detach().clone()
            continue
        rest = key[len(owner) + 1 :]
        if rest.startswith("lora_"):
            continue
        m = lora_prefixes[owner]
        name = rest.removeprefix("base.")
        sd[f"{owner}.{name}"] = (m.merged_weight() if name == "weight" else m.base.bias).detach().clone()
    return sd
