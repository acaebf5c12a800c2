"""adaqual_ros.detection."""
