"""Image encoder: Hiera trunk + FPN neck with sine position encodings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from napari_sam2.errors import InputError

from .hiera import Hiera
from .position_encoding import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """Projects each trunk stage to d_model channels; top-down fusion only on chosen levels.

    ``convs[j]`` projects the j-th map counted from the *lowest* resolution, as in the
    official checkpoints.
    """

    def __init__(
        self,
        d_model: int,
        backbone_channel_list: Sequence[int],
        fpn_top_down_levels: Sequence[int] | None = None,
        fpn_interp_model: str = "bilinear",
    ) -> None:
        super().__init__()
        self.position_encoding = PositionEmbeddingSine(d_model)
        self.convs = nn.ModuleList()
        for channels in backbone_channel_list:
            branch = nn.Sequential()
            branch.add_module("conv", nn.Conv2d(channels, d_model, kernel_size=1))
            self.convs.append(branch)
        self.backbone_channel_list = list(backbone_channel_list)
        self.interp_mode = fpn_interp_model
        levels = range(len(self.convs)) if fpn_top_down_levels is None else fpn_top_down_levels
        self.top_down_levels = set(levels)

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(self.convs) - 1
        feats: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        pos: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):  # low resolution -> high resolution
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and prev is not None:
                up = F.interpolate(
                    prev.float(),
                    scale_factor=2.0,
                    mode=self.interp_mode,
                    align_corners=None if self.interp_mode == "nearest" else False,
                )
                prev = lateral + up
            else:
                prev = lateral
            feats[i] = prev
            pos[i] = self.position_encoding(prev).to(prev.dtype)
        return feats, pos


class ImageEncoder(nn.Module):
    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        if trunk.channel_list != neck.backbone_channel_list:
            raise InputError(
                f"trunk channels {trunk.channel_list} do not match neck channels {neck.backbone_channel_list}"
            )
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, image: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        feats, pos = self.neck(self.trunk(image))
        if self.scalp > 0:  # drop the lowest-resolution level(s)
            feats, pos = feats[: -self.scalp], pos[: -self.scalp]
        return {"backbone_fpn": feats, "vision_pos_enc": pos}
