"""The rclpy nodes: detector (and its managed variant), matcher, image_source; each runs through usp_ros.support."""
