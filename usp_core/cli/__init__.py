"""The command-line tools of setup.py: usp-train, usp-label, usp-eval, usp-shapes-eval, usp-export, usp-bench."""
__all__ = ["train", "label", "eval", "shapes_eval", "export", "bench"]
