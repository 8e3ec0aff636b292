"""pip install of usp_core and its command-line tools, without any ROS build.

usp_ros (the rclpy nodes and the generated messages) is installed by colcon only, so an
editable usp_ros never shadows the one that carries usp_ros.msg.
"""
from setuptools import find_packages, setup

setup(
    name="usp-core",
    version="0.1.0",
    description="UnsuperPoint learned keypoints and descriptors in PyTorch: model, losses, trainer, evaluation",
    python_requires=">=3.10",
    packages=find_packages(include=["usp_core", "usp_core.*"]),
    package_data={"usp_core": ["weights/*.pt", "weights/*.yaml", "weights/*.gate.json"]},
    install_requires=[
        "torch>=2.3",  # install torch==2.13.0 (CPU) first; this range then installs nothing more
        "numpy>=1.24",
        "opencv-contrib-python-headless>=4.8",  # contrib: AKAZE and BRISK, evaluation anchors (OpenCV 5 moved them)
        "openvino>=2026.4",  # default CPU backend (usp_core.inference.backends): +59 MB download, +180 MB installed
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pillow>=10",  # usp_ros: JPEG decoding (quiet on corrupt data, reduced-size decoding) and GIF output
        "rosbags>=0.11",  # usp_ros process_bag: pure-Python rosbag2 read/write (MCAP, sqlite3), as rosbag2_py is not on PyPI
    ],
    extras_require={
        # usp-export --format onnx, and the onnxruntime inference backend (onnxruntime alone: +28 MB download, +82 MB)
        "onnx": ["onnx>=1.16", "onnxscript>=0.5", "onnxruntime>=1.18"],
        "tensorboard": ["tensorboard"],  # usp-train writes TensorBoard events when installed
        "int8": ["nncf>=3.4"],  # precision int8: post-training quantisation; +180 MB installed (with SciPy, scikit-learn)
        "test": ["pytest>=7", "hypothesis>=6", "onnx>=1.16", "onnxscript>=0.5", "onnxruntime>=1.18", "nncf>=3.4"],
    },
    entry_points={
        "console_scripts": [
            "usp-train=usp_core.cli.train:main",
            "usp-export=usp_core.cli.export:main",
            "usp-eval=usp_core.cli.eval:main",
            "usp-eval-pose=usp_core.cli.eval_pose:main",
            "usp-bench=usp_core.cli.bench:main",
            "usp-label=usp_core.cli.label:main",
            "usp-shapes-eval=usp_core.cli.shapes_eval:main",
            "usp-select=usp_core.cli.select:main",
            "usp-gate=usp_core.cli.gate:main",
        ],
    },
)
