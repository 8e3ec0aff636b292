"""Descriptor matching for the evaluation: plain and mutual nearest neighbours, per descriptor kind.

Plain nearest neighbours (every point gets its nearest neighbour in the other image, each way) feed
the published matching score; the mutual nearest neighbours, the pairs found both ways, feed
homography estimation and the mutual matching score (the same pairs as the ROS matcher's
usp_core.geometry.matching.mutual_nearest_neighbours, tested). Descriptors are first mapped to
vectors of one norm per kind, so that the nearest in L2 is the right one: float descriptors are
L2-normalised (nearest in L2 = nearest in cosine), and binary descriptors (packed uint8 bits, as
ORB/BRISK/AKAZE give them) are unpacked to +-1, for which squared L2 distance = 4 * Hamming distance,
exact in float32, so nearest in L2 = nearest in Hamming, ties included.
"""
from __future__ import annotations

import numpy as np
import torch


def descriptor_vectors(descriptors: np.ndarray, binary: bool) -> torch.Tensor:
    """(N, D) descriptors -> (N, D') float32 vectors of equal norm whose L2 order is the method's own metric.

    binary: descriptors are (N, B) uint8 packed bits and D' = 8 B entries of +-1; otherwise D' = D, unit vectors.
    """
    if binary:
        bits = np.unpackbits(np.ascontiguousarray(descriptors, dtype=np.uint8), axis=1).astype(np.float32)
        vectors = 2.0 * bits - 1.0
    else:
        vectors = np.asarray(descriptors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))


def nearest_neighbour_matches(
    descriptors_a: np.ndarray, descriptors_b: np.ndarray, binary: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Plain nearest-neighbour matches each way between (N, D) and (M, D) descriptors, no selection.

    Returns (N, 2) and (M, 2) int64 index pairs, both as (i in a, j in b): every i with its nearest j,
    then every j with its nearest i. Ties go to the lowest index, as cv2.BFMatcher(crossCheck=False)
    does; both are empty when either side has no descriptor. The vectors share one norm, so the
    nearest in L2 is the largest dot product.
    """
    if len(descriptors_a) == 0 or len(descriptors_b) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros((0, 2), dtype=np.int64)
    similarity = (descriptor_vectors(descriptors_a, binary) @ descriptor_vectors(descriptors_b, binary).T).numpy()
    rows, columns = np.arange(similarity.shape[0]), np.arange(similarity.shape[1])
    a_to_b = np.stack([rows, similarity.argmax(axis=1)], axis=1)
    b_to_a = np.stack([similarity.argmax(axis=0), columns], axis=1)
    return a_to_b.astype(np.int64), b_to_a.astype(np.int64)


def mutual_matches(matches_ab: np.ndarray, matches_ba: np.ndarray) -> np.ndarray:
    """Mutual nearest-neighbour matches (K, 2) int64 (i in a, j in b), ordered by i: the pairs in both
    plain nearest-neighbour lists of :func:`nearest_neighbour_matches`, (N, 2) a->b and (M, 2) b->a."""
    nearest_i = matches_ba[:, 0]  # for each j, its nearest i (matches_ba holds every j in order)
    return matches_ab[nearest_i[matches_ab[:, 1]] == matches_ab[:, 0]]
