"""adaqual_ros.weather."""
