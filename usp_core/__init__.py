"""usp_core: UnsuperPoint in PyTorch, with no ROS dependency.

The model, its losses, homography geometry, data, the trainer, evaluation and export.
"""
