"""adaqual_ros.cli."""
