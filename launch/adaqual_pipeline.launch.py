"""
The whole graph: restoration, YOLO on the raw and the restored stream, metrics, e.g.
`ros2 launch adaqual_ros adaqual_pipeline.launch.py namespace:=/front image:=/cam/image_raw`.

Needs `launch` and `launch_ros` (a system ROS 2 install). The nodes, their namespaces and remaps
come from config/pipeline.yaml, the same file `adaqual pipeline --params config/pipeline.yaml`
reads to start the same graph as plain processes on pip-only installs; parameters come from the
params file it names (config/params.yaml, generated from adaqual_ros/ros/params.py). The graph's
executables are restoration_node, detection_node (twice: raw/ and restored/, plus clean/ with a
source), metrics_node and camera_player (with a source).

Several cameras: `graph:=$(ros2 pkg prefix adaqual_ros)/share/adaqual_ros/config/` +
`pipeline_cameras.yaml` starts one restoration node and one detection node for two cameras
(`cameras` parameter); that file remaps each camera's topics, so leave `image` empty (it is
refused for such a graph).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from adaqual_ros.ros.pipeline_graph import GRAPH_ARGUMENTS, build_graph, check_graph

PACKAGE = 'adaqual_ros'  # also spelt out in Node(...) for readers and checks


def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    # The same graph, from the same arguments, as `adaqual pipeline` (build_graph: tested there).
    graph = build_graph(arg('graph'), namespace=arg('namespace') or None,
                        params_file=arg('params_file') or None,
                        **{name: arg(name) for name in GRAPH_ARGUMENTS})
    problems = check_graph(graph)
    if problems:
        raise RuntimeError('adaqual_pipeline.launch.py: ' + '; '.join(problems))
    # Params files first, then the graph's own values: later entries win, as with --ros-args.
    return [Node(package='adaqual_ros', executable=node.executable, name=node.name,
                 namespace=node.namespace, output='screen',
                 parameters=[str(f) for f in node.params_files]
                 + ([node.parameters] if node.parameters else []),
                 remappings=list(node.remaps.items()),
                 ros_arguments=['--log-level', arg('log_level')])
            for node in graph.enabled()]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    args = [
        DeclareLaunchArgument('graph', default_value=os.path.join(share, 'config',
                                                                  'pipeline.yaml'),
                              description='Graph file: nodes, namespaces, remaps, params file'),
        DeclareLaunchArgument('namespace', default_value='',
                              description="Namespace of the graph (empty: the graph file's)"),
        DeclareLaunchArgument('params_file', default_value='',
                              description="ROS params YAML for every node (empty: the graph "
                                          "file's, config/params.yaml)"),
        DeclareLaunchArgument('image', default_value='',
                              description='Camera image topic (empty: <namespace>/image_raw)'),
        DeclareLaunchArgument('detector', default_value='',
                              description='YOLO model for the detection nodes (empty: their '
                                          'model parameter)'),
        DeclareLaunchArgument('backend', default_value='',
                              description='Restoration backend (empty: the params file)'),
        DeclareLaunchArgument('device', default_value='',
                              description='Torch device of every node (empty: params file)'),
        DeclareLaunchArgument('report_dir', default_value='',
                              description='Metrics report folder (empty: params file)'),
        DeclareLaunchArgument('source', default_value='',
                              description='Video/folder/bag to play: adds the player and the '
                                          'clean-frame detector (the metrics reference)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='ROS log level of every node'),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_nodes)])
