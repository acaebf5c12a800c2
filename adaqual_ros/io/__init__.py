"""adaqual_ros.io."""
