"""Predictors with Meta's API: the image predictor (set_image/predict) and the video predictor (init_state/add_new_points/propagate_in_video), their inference state and outputs."""
