"""Training the networks: config, data, losses, the trainer.

config: TrainConfig (one dataclass per section, strict YAML); data: photos, crops, photometric noise,
homography pairs; superpoint_data: Synthetic Shapes and pseudo-labelled pairs; synthetic_shapes: the
renderer; homographic_adaptation: SuperPoint's pseudo-labels; losses, superpoint_losses; trainer.
"""
__all__ = ["config", "data", "superpoint_data", "synthetic_shapes", "homographic_adaptation", "losses",
           "superpoint_losses", "trainer"]
