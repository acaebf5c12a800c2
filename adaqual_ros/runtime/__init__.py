"""adaqual_ros.runtime."""
