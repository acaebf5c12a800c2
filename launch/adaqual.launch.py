"""
The restoration node alone, e.g.
`ros2 launch adaqual_ros adaqual.launch.py namespace:=front image:=/cam/image_raw`.

Needs `launch` and `launch_ros` (a system ROS 2 install). Parameters come from a params YAML
(default: the package's config/params.yaml, generated from adaqual_ros/ros/params.py, whose
`/**/adaqual_restoration` section applies in any namespace); `backend`, `device` and `cameras`,
when given, override it. With `cameras:=front,rear` the node reads `front/image_raw`,
`rear/image_raw`, ... under its namespace (the `image` and `camera_info` remaps are for a
single camera). Without `ros2 launch`, start the same node with
`restoration_node --ros-args --params-file config/params.yaml -r image_raw:=/cam/image_raw`
(or the whole graph with `adaqual pipeline --params config/pipeline.yaml`).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _node(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    # Only arguments actually given override the params file (an empty default would otherwise
    # silently replace what the file says).
    overrides = {key: arg(key) for key in ('backend', 'device', 'cameras') if arg(key)}
    image = arg('image')
    return [Node(
        package='adaqual_ros',
        executable='restoration_node',
        name='adaqual_restoration',
        namespace=arg('namespace'),
        output='screen',
        parameters=[arg('params_file')] + ([overrides] if overrides else []),
        remappings=[('image_raw', image),
                    ('image_raw/compressed', image + '/compressed'),
                    ('camera_info', arg('camera_info'))],
        ros_arguments=['--log-level', arg('log_level')],
    )]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory('adaqual_ros'), 'config',
                                  'params.yaml')
    args = [
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the node and its relative topics'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='ROS 2 params YAML for adaqual_restoration'),
        DeclareLaunchArgument('image', default_value='image_raw',
                              description='Input image topic (image_raw/compressed is derived)'),
        DeclareLaunchArgument('camera_info', default_value='camera_info',
                              description='Input camera_info topic'),
        DeclareLaunchArgument('backend', default_value='',
                              description='adaqual | classical | passthrough (empty: the '
                                          'params file)'),
        DeclareLaunchArgument('device', default_value='',
                              description='auto | cpu | cuda | cuda:N (empty: the params file)'),
        DeclareLaunchArgument('cameras', default_value='',
                              description='Several cameras from one node, e.g. front,rear '
                                          '(empty: one camera on image_raw)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='ROS log level of the node'),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
