"""Thin Qt widgets over the annotator."""
