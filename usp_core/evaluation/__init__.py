"""HPatches-protocol evaluation of keypoint methods (the usp-eval command).

dataset: sequence folders -> resized pairs with rescaled homographies; methods: usp and OpenCV
detectors behind one extract() interface; match: plain and mutual nearest neighbours per descriptor
kind; metrics: repeatability, localization error, homography accuracy, matching scores (pure numpy);
runner: per-pair evaluation and summaries; report / plot / visualize / output: tables, figure,
match pictures and atomic files.
"""
