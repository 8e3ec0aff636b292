"""The package as a newcomer meets it: Python started in the repository root imports the source folder
`usp_ros/`, which must still find the generated messages in the install space."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_source_folder_does_not_hide_the_generated_messages():
    probe = ("import usp_ros, usp_ros.nodes.detector; from usp_ros.msg import Features, FrameMatch; "
             "print(usp_ros.__path__[0]); print(usp_ros.nodes.detector.__file__)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    package, detector = done.stdout.split()
    assert Path(package) == REPO / "usp_ros", "Python in the repository root imports the source folder first"
    assert Path(detector) == REPO / "usp_ros" / "nodes" / "detector.py"
