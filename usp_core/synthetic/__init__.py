"""Inputs with known ground truth for demos, tests and benchmarks (torch-free).

virtual_camera: a camera moving over a photo, frames with their true homographies; sequence:
synthetic keypoint sequences with known motion for the matcher.
"""
__all__ = ["virtual_camera", "sequence"]
