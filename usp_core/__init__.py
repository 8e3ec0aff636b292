"""usp_core: UnsuperPoint and SuperPoint in PyTorch, with no ROS dependency.

Folders by role, arrows only downward (tested: test/core/test_layout.py):

- support/: errors, devices, atomic files, checkpoint files, image files, the frame queue, drawing
- models/: the networks (UnsuperPoint, SuperPoint/MagicPoint), their layers, build_model
- inference/: KeypointDetector, point selection, Features, backends, export, graph cache, load_network
- geometry/: homographies, matching, tracking, match results
- training/: losses, data, Synthetic Shapes, Homographic Adaptation, config, trainer
- synthetic/: the virtual camera and synthetic keypoint sequences (demos, tests, benchmarks)
- evaluation/, cli/: usp-eval and the other command-line tools

``from usp_core import KeypointDetector`` works; importing ``usp_core`` alone loads nothing (torch is
loaded at the first use of a name below), so torch-free modules such as usp_core.geometry.match_result
stay torch-free.
"""
from __future__ import annotations

__all__ = ["KeypointDetector", "DetectorConfig", "Features", "load_network"]


def __getattr__(name: str):
    """The public names of usp_core.inference, imported at first use (see the module docstring)."""
    if name in __all__:
        from usp_core import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'usp_core' has no attribute {name!r}")
