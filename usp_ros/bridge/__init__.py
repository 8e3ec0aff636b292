"""ROS messages <-> numpy: camera images (images) and our Features/FrameMatch messages (messages)."""
