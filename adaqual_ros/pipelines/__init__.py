"""adaqual_ros.pipelines."""
