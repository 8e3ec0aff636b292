"""Descriptor matching for the evaluation: one mutual nearest-neighbour routine for every method.

The matching itself is usp_core.matching.mutual_nearest_neighbours (shared with the ROS matcher).
Descriptors are first mapped to unit vectors so that its nearest neighbour is the right one for
each kind: float descriptors are L2-normalised (nearest in L2 = nearest in cosine), and binary
descriptors (packed uint8 bits, as ORB/BRISK/AKAZE give them) are unpacked to +-1/sqrt(bits), for
which squared L2 distance = 4 * Hamming distance / bits, so nearest in L2 = nearest in Hamming.
"""
from __future__ import annotations

import numpy as np
import torch

from usp_core.matching import mutual_nearest_neighbours


def descriptor_vectors(descriptors: np.ndarray, binary: bool) -> torch.Tensor:
    """(N, D) descriptors -> (N, D') float32 unit vectors whose L2 / cosine order is the method's own metric.

    binary: descriptors are (N, B) uint8 packed bits and D' = 8 B; otherwise D' = D.
    """
    if binary:
        bits = np.unpackbits(np.ascontiguousarray(descriptors, dtype=np.uint8), axis=1).astype(np.float32)
        vectors = (2.0 * bits - 1.0) / np.sqrt(max(bits.shape[1], 1))
    else:
        vectors = np.asarray(descriptors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))


def match_descriptors(descriptors_a: np.ndarray, descriptors_b: np.ndarray, binary: bool) -> np.ndarray:
    """Mutual nearest-neighbour matches between (N, D) and (M, D) descriptors -> (K, 2) int64 (i in a, j in b)."""
    if len(descriptors_a) == 0 or len(descriptors_b) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    vectors_a, vectors_b = descriptor_vectors(descriptors_a, binary), descriptor_vectors(descriptors_b, binary)
    pairs = mutual_nearest_neighbours(vectors_a, vectors_b)
    return np.asarray(pairs.cpu(), dtype=np.int64).reshape(-1, 2)
