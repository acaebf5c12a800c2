"""adaqual_ros.models."""
