"""Prompts: the points, boxes and masks of each object on each frame, and prompt files."""
