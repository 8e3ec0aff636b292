"""Geometry between images: homographies, descriptor matching, tracking, match results, camera models, two views.

homography: sampling, warping, scaling (torch); matching: mutual nearest neighbours, robust homography;
tracking: reference frames, keyframes, persistent track ids, trails; match_result: MatchResult, the
matcher's output (torch-free); camera: camera models and undistortion; two_view: two-view models and
relative pose (no ROS, no torch).
"""
__all__ = ["homography", "matching", "tracking", "match_result", "camera", "two_view"]
