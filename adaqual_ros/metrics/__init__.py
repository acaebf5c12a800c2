"""adaqual_ros.metrics."""
