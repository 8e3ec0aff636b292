"""Geometry between images: homographies, descriptor matching, tracking, match results.

homography: sampling, warping, scaling (torch); matching: mutual nearest neighbours, robust homography;
tracking: reference frames, keyframes, persistent track ids, trails; match_result: MatchResult, the
matcher's output (torch-free).
"""
__all__ = ["homography", "matching", "tracking", "match_result"]
