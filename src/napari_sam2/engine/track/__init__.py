"""Interactive tracking: the tracking session that clicks and 'All cells' runs share (one video state, one normaliser fit), and the events a run reports."""
