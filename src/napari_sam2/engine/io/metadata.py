"""What a reader knows about where the pixels sit in space, carried from the input to the writer.

A :class:`SourceMetadata` travels with a :class:`~napari_sam2.engine.frames.open.FrameSource`
(``source.metadata``) so that labels written at the end land in the input's space: the same
axes, physical pixel size and units for OME-Zarr / OME-TIFF, the same affine (voxel -> world)
and NIfTI header geometry for medical volumes.

Fields a reader does not know stay ``None``; nothing is guessed (a bare numpy array has no
axes, no pixel size, no orientation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from napari_sam2.errors import InputError

__all__ = ["SourceMetadata", "AXIS_LETTERS", "NGFF_TO_OME_UNIT", "NGFF_TO_IMAGEJ_UNIT"]

#: Axis names used throughout: the OME-NGFF ones, in their canonical order.
AXIS_LETTERS = "tczyx"

#: NGFF unit names (UDUNITS-2, as the OME-NGFF axes use them) -> OME-XML unit symbols.
NGFF_TO_OME_UNIT = {
    "angstrom": "Å",
    "nanometer": "nm",
    "micrometer": "µm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
    "picometer": "pm",
    "nanosecond": "ns",
    "microsecond": "µs",
    "millisecond": "ms",
    "second": "s",
    "minute": "min",
    "hour": "h",
}
#: NGFF unit names -> the unit strings ImageJ understands.
NGFF_TO_IMAGEJ_UNIT = {
    "nanometer": "nm",
    "micrometer": "um",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
}


@dataclass(frozen=True)
class SourceMetadata:
    """Read-only facts about an input stack, per axis of the array the reader returned.

    Attributes:
        kind: ``"ome-zarr"``, ``"zarr"``, ``"nifti"``, ``"dicom"``, ``"tiff"``, ``"folder"`` or
            ``"array"``.
        path: the file or folder it came from (None for in-memory data).
        axes: axis letters from ``tczyx`` of the full array, e.g. ``"zyx"`` or ``"tczyx"``.
        scale: physical size of one pixel along each axis (NGFF ``scale``; NIfTI/DICOM spacing).
        units: NGFF unit name per axis (``"micrometer"``, ``"millimeter"``, ``"second"``) or None.
        translation: physical position of pixel 0 per axis (NGFF ``translation``), if given.
        affine: 4x4 voxel -> world matrix of a medical volume, in nibabel's convention: it maps
            voxel indices ``(x, y, z, 1)`` (the array indices in *reverse* order: ``zyx`` data
            ``a[z, y, x]``) to RAS+ millimetres. DICOM's LPS positions are converted to it.
        orientation: axis codes of ``affine`` (nibabel ``aff2axcodes``), e.g. ``"LPS"``: the
            direction each of the voxel axes x, y, z points to.
        modality: DICOM ``Modality`` (``"CT"``, ``"MR"``...), when known.
        window: the (center, width) display window the file recommends (DICOM WindowCenter /
            WindowWidth), in the data's units.
        name: a human name (NGFF multiscale name, DICOM SeriesDescription, file stem).
        ngff_version: OME-NGFF version of an OME-Zarr source (``"0.4"``, ``"0.5"``).
        pyramid_factors: for an OME-Zarr source, per lower resolution level, its downsampling
            factor along each axis relative to level 0 (written labels get the same pyramid).
        nifti_header: the raw NIfTI header of a NIfTI source (348 or 540 bytes), so that labels
            are written with exactly its geometry (qform, sform and their codes, units).
    """

    kind: str
    path: str | None = None
    axes: str | None = None
    scale: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None
    translation: tuple[float, ...] | None = None
    affine: tuple[tuple[float, ...], ...] | None = None
    orientation: str | None = None
    modality: str | None = None
    window: tuple[float, float] | None = None
    name: str | None = None
    ngff_version: str | None = None
    pyramid_factors: tuple[tuple[float, ...], ...] | None = None
    nifti_header: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.axes is not None:
            if len(set(self.axes)) != len(self.axes) or set(self.axes) - set(AXIS_LETTERS):
                raise InputError(f"axes must be distinct letters of {AXIS_LETTERS!r}; got {self.axes!r}")
            for name in ("scale", "units", "translation"):
                value = getattr(self, name)
                if value is not None and len(value) != len(self.axes):
                    raise InputError(
                        f"{name} has {len(value)} entries for the {len(self.axes)} axes {self.axes!r}"
                    )
        if self.affine is not None and np.asarray(self.affine).shape != (4, 4):
            raise InputError("affine must be a 4x4 matrix")

    # -- derived ----------------------------------------------------------------------------
    @property
    def affine_array(self) -> np.ndarray | None:
        """``affine`` as a float64 (4, 4) array (a copy), or None."""
        return None if self.affine is None else np.array(self.affine, dtype=np.float64)

    def scale_of(self, axis: str, default: float | None = None) -> float | None:
        """Pixel size along ``axis`` (a letter), or ``default`` if unknown."""
        if self.axes is None or self.scale is None or axis not in self.axes:
            return default
        return self.scale[self.axes.index(axis)]

    def unit_of(self, axis: str) -> str | None:
        """NGFF unit name along ``axis``, or None."""
        if self.axes is None or self.units is None or axis not in self.axes:
            return None
        return self.units[self.axes.index(axis)]

    def drop_axes(self, letters: str) -> SourceMetadata:
        """The metadata of the data with ``letters`` removed (e.g. ``"c"`` for label images)."""
        if self.axes is None:
            return self
        keep = [i for i, a in enumerate(self.axes) if a not in letters]

        def pick(values):
            return None if values is None else tuple(values[i] for i in keep)

        factors = self.pyramid_factors
        return dataclasses.replace(
            self,
            axes="".join(self.axes[i] for i in keep),
            scale=pick(self.scale),
            units=pick(self.units),
            translation=pick(self.translation),
            pyramid_factors=None if factors is None else tuple(pick(f) for f in factors),
        )

    @staticmethod
    def affine_tuple(affine: np.ndarray) -> tuple[tuple[float, ...], ...]:
        """A (4, 4) array as the immutable nested tuple stored in ``affine``."""
        a = np.asarray(affine, dtype=np.float64)
        return tuple(tuple(float(v) for v in row) for row in a)
