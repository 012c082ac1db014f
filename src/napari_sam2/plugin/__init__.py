"""The napari side: stack geometry, prompt and output layers, the Qt-free annotator, the
job runner, the Qt panels (``_qt``), the writer and the sample data."""
