"""The ROS 2 layer: the only part of adaqual_ros that imports rclpy."""
