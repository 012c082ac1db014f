"""Every-cell tracking: seeding from segment everything, the track-all run with re-seeding, discovery of new cells and divisions, the lineage graph and its exports (CTC, GEFF, CSV)."""
