"""Segment everything: the automatic mask generator (Meta's algorithm), its tiled variant and the mask utilities they share."""
