"""adaqual_ros.prompting."""
