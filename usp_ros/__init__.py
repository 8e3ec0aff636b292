"""usp_ros: rclpy nodes and message conversions for the UnsuperPoint detector.

Installed by colcon only: rosidl generates `usp_ros.msg` into this same package.
"""
