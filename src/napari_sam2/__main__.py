"""``python -m napari_sam2`` is the ``napari-sam2`` command."""

import sys

from napari_sam2.cli import main

if __name__ == "__main__":
    sys.exit(main())
