"""The visual front-end: detector + matcher on a camera topic (and the virtual camera when asked).

    ros2 launch usp_ros frontend.launch.py camera_topic:=/camera/image_raw
    ros2 launch usp_ros frontend.launch.py use_virtual_camera:=true

Topics (relative to ``namespace``): the detector reads ``camera_topic`` and publishes ``features``;
the matcher publishes ``matches`` (usp_ros/FrameMatch) and, while viewed, ``matches/debug_image``.
The image source, when started, publishes ``camera_topic`` and ``ground_truth``. Parameters come
from config/detector.yaml, config/matcher.yaml and config/image_source.yaml, overridden by the
arguments below. The Fast DDS profile for large images is set for every process unless
FASTDDS_DEFAULT_PROFILES_FILE is already set.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {  # name: (default, description)
    "camera_topic": ("image", "image topic the detector reads (and the virtual camera writes)"),
    "namespace": ("", "namespace of the nodes and their relative topics"),
    "device": ("auto", "torch device of detector and matcher: auto, cpu, cuda or cuda:N"),
    "model_path": ("", "detector checkpoint; empty = the bundled weights"),
    "backend": ("auto", "detector inference runtime: auto, torch, onnxruntime or openvino"),
    "precision": ("auto", "detector precision: auto, fp32, fp16, bf16 or int8 (usp_core.inference.precision)"),
    "keyframe_mode": ("false", "matcher: match against the last keyframe instead of the previous frame"),
    "use_virtual_camera": ("false", "also start image_source flying a virtual camera over a sample photo"),
}


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("usp_ros")
    config = os.path.join(share, "config")
    arg = LaunchConfiguration
    camera = {"image": arg("camera_topic")}
    profile = EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                  default_value=os.path.join(config, "fastdds_large_images.xml"))
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, (default, description) in ARGUMENTS.items()),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile),
        Node(package="usp_ros", executable="detector_node", name="detector", namespace=arg("namespace"),
             parameters=[os.path.join(config, "detector.yaml"),
                         {"device": arg("device"), "model_path": arg("model_path"), "backend": arg("backend"),
                          "precision": arg("precision")}],
             remappings=list(camera.items()), output="screen"),
        Node(package="usp_ros", executable="matcher_node", name="matcher", namespace=arg("namespace"),
             parameters=[os.path.join(config, "matcher.yaml"),
                         {"device": arg("device"), "keyframe_mode": arg("keyframe_mode")}],
             remappings=list(camera.items()), output="screen"),
        Node(package="usp_ros", executable="image_source", name="image_source", namespace=arg("namespace"),
             parameters=[os.path.join(config, "image_source.yaml"), {"source": "virtual"}],
             remappings=list(camera.items()), output="screen", condition=IfCondition(arg("use_virtual_camera"))),
    ])
