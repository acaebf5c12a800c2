"""adaqual_ros.training."""
