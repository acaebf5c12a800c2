"""adaqual_ros.quality."""
