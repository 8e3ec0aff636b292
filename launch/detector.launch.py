"""Start the UnsuperPoint detector on a camera topic, and optionally the frame-to-frame matcher.

    ros2 launch usp_ros detector.launch.py camera_topic:=/camera/image_raw device:=cuda with_matcher:=true
    ros2 launch usp_ros detector.launch.py backend:=onnxruntime
    ros2 launch usp_ros detector.launch.py precision:=bf16   # or int8 with calibration_dir in the params file
    ros2 launch usp_ros detector.launch.py lifecycle:=true   # managed node, for a lifecycle manager

The detector subscribes to ``camera_topic`` (``<camera_topic>/compressed`` with input_transport
compressed in the params file) and publishes ``features`` and ``features/debug_image`` in
``namespace``. The matcher (``with_matcher:=true``) reads ``features`` and, for its debug image,
``camera_topic``, and publishes ``matches`` and ``matches/debug_image``; ``device`` reaches both nodes.
Unless FASTDDS_DEFAULT_PROFILES_FILE is already set, the nodes get the Fast DDS profile shipped in
config/ (a shared-memory segment large enough for best-effort camera images).
With ``lifecycle:=true`` the detector is the managed ``lifecycle_detector_node``: it starts unconfigured
and waits for configure and activate (``ros2 lifecycle set``, or a lifecycle manager such as Nav2's).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("usp_ros")
    camera_topic = LaunchConfiguration("camera_topic")
    namespace = LaunchConfiguration("namespace")
    device = LaunchConfiguration("device")
    arguments = [
        DeclareLaunchArgument("camera_topic", default_value="image",
                              description="Camera image topic (sensor_msgs/Image) of the detector, and of the "
                                          "matcher's debug image"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the detector (and matcher) and their output topics"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "detector.yaml"]),
                              description="Detector parameters (ros__parameters YAML)"),
        DeclareLaunchArgument("device", default_value="auto",
                              description="Torch device of detector and matcher: auto, cpu, cuda or cuda:N "
                                          "(overrides params_file and matcher_params_file)"),
        DeclareLaunchArgument("backend", default_value="auto", choices=["auto", "torch", "onnxruntime", "openvino"],
                              description="Inference runtime of the detector (overrides params_file)"),
        DeclareLaunchArgument("precision", default_value="auto", choices=["auto", "fp32", "fp16", "bf16", "int8"],
                              description="What the detector's network computes in (overrides params_file; "
                                          "usp_core.inference.precision)"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="Start the detector as a managed (lifecycle) node, left unconfigured"),
        DeclareLaunchArgument("with_matcher", default_value="false", choices=["true", "false"],
                              description="Also start the matcher node (frame-to-frame homographies)"),
        DeclareLaunchArgument("matcher_params_file",
                              default_value=PathJoinSubstitution([share, "config", "matcher.yaml"]),
                              description="Matcher parameters (ros__parameters YAML)"),
    ]
    fastdds_profile = SetEnvironmentVariable(
        "FASTDDS_DEFAULT_PROFILES_FILE",
        EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                            default_value=PathJoinSubstitution([share, "config", "fastdds_large_images.xml"])))
    lifecycle = LaunchConfiguration("lifecycle")
    detector_parameters = [LaunchConfiguration("params_file"),
                           {"device": device, "backend": LaunchConfiguration("backend"),
                            "precision": LaunchConfiguration("precision")}]
    detector_remappings = [("image", camera_topic), ("image/compressed", [camera_topic, "/compressed"])]
    detector = Node(
        package="usp_ros", executable="detector_node", name="detector", namespace=namespace,
        parameters=detector_parameters, remappings=detector_remappings, condition=UnlessCondition(lifecycle),
        output="screen", emulate_tty=True)
    managed_detector = LifecycleNode(
        package="usp_ros", executable="lifecycle_detector_node", name="detector", namespace=namespace,
        parameters=detector_parameters, remappings=detector_remappings, condition=IfCondition(lifecycle),
        output="screen", emulate_tty=True)
    matcher = Node(
        package="usp_ros", executable="matcher_node", name="matcher", namespace=namespace,
        parameters=[LaunchConfiguration("matcher_params_file"), {"device": device}],
        remappings=[("image", camera_topic)], condition=IfCondition(LaunchConfiguration("with_matcher")),
        output="screen", emulate_tty=True)
    return LaunchDescription([*arguments, fastdds_profile, detector, managed_detector, matcher])
