"""
The restoration node alone, e.g.
`ros2 launch adaqual_ros adaqual.launch.py namespace:=front image:=/cam/image_raw`.

Needs `launch` and `launch_ros` (a system ROS 2 install). Parameters come from a params YAML
(default: the package's config/params.yaml, generated from adaqual_ros/ros/params.py); a few
arguments cover what people change most. Without `ros2 launch`, start the same node with
`restoration_node --ros-args --params-file config/params.yaml -r image_raw:=/cam/image_raw`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


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
        DeclareLaunchArgument('backend', default_value='adaqual',
                              description='adaqual | classical | passthrough'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='auto | cpu | cuda | cuda:N'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='ROS log level of the node'),
    ]
    image = LaunchConfiguration('image')
    node = Node(
        package='adaqual_ros',
        executable='restoration_node',
        name='adaqual_restoration',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        parameters=[LaunchConfiguration('params_file'),
                    {'backend': LaunchConfiguration('backend'),
                     'device': LaunchConfiguration('device')}],
        remappings=[('image_raw', image),
                    ('image_raw/compressed', [image, '/compressed']),
                    ('camera_info', LaunchConfiguration('camera_info'))],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
    )
    return LaunchDescription(args + [node])
