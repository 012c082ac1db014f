"""A napari image layer as the engine's stack view (no Qt, no torch): its shape, its
full-resolution data, and a :class:`StackGeometry` made from the layer."""

from __future__ import annotations

from collections.abc import Sequence

from napari_sam2.engine.frames.stack_view import StackView, candidate_frame_axes, spatial_axes

__all__ = ["StackGeometry", "candidate_frame_axes", "layer_data", "layer_shape", "spatial_axes"]


def layer_shape(layer) -> tuple[int, ...]:
    """Shape of ``layer`` along its napari axes (an RGB(A) layer's colour axis dropped)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    return shape


def layer_data(layer):
    """The full-resolution array of an image layer (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


class StackGeometry(StackView):
    """The :class:`~napari_sam2.engine.frames.stack_view.StackView` of a napari image layer."""

    @classmethod
    def from_layer(
        cls,
        layer,
        frame_axis: int | None | str = "auto",
        channel_axis: int | None = None,
        position: Sequence[float] | None = None,
    ) -> StackGeometry:
        """Geometry for ``layer``; ``position`` is a point in the layer's data coordinates
        (e.g. ``layer.world_to_data(viewer.dims.point)``) that fixes the held axes."""
        return cls.from_shape(
            layer_shape(layer), frame_axis, channel_axis, bool(getattr(layer, "rgb", False)), position
        )
