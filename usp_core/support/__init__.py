"""What several rooms and usp_ros share, with no network or geometry in it.

errors: one-line messages; device: "auto"/"cpu"/"cuda" to a torch device; atomic: files written
atomically; checkpoint: the checkpoint file format (safe load, atomic save, weights that fit);
image_files: image extensions and grey reads; frame_queue: drop-oldest queue and its worker thread;
drawing: debug pictures (keypoints, tracks, captions).
"""
__all__ = ["errors", "device", "atomic", "checkpoint", "image_files", "frame_queue", "drawing"]
