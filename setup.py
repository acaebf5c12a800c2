"""adaqual_ros: weather-robust perception preprocessing for ROS 2 (ament_python + plain pip)."""
from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'adaqual_ros'

# Python dependencies are declared here and nowhere else (the Makefile installs `.[dev]`).
install_requires = [
    'numpy>=1.24',
    'opencv-python-headless>=4.8',
    'torch>=2.4',
    'torchvision>=0.19',
    'diffusers>=0.30',
    'transformers>=4.44',
    'accelerate>=0.33',
    'safetensors>=0.4',
    'ultralytics>=8.2',
    'onnxruntime>=1.17',
    'scipy>=1.10',
    'scikit-image>=0.22',
    'tqdm>=4.66',
    'matplotlib>=3.8',
    'mcap>=1.1',
    'mcap-ros2-support>=0.5',
    'pyyaml>=6.0',
]
extras_require = {
    'dev': ['pytest>=8', 'pytest-timeout>=2.3', 'ruff>=0.5'],
    # ROS 2 Python wheels (Kilted) for machines without a system ROS 2; the Makefile installs
    # them only when `import rclpy` fails.
    'ros': [
        'ros-rclpy', 'ros-rmw-fastrtps-cpp', 'ros-sensor-msgs', 'ros-std-msgs', 'ros-std-srvs',
        'ros-diagnostic-msgs',
    ],
}


def package_files(*patterns):
    return [f for p in patterns for f in glob(p) if os.path.isfile(f)]


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    include_package_data=True,
    package_data={package_name: ['checkpoints/**/*', 'checkpoints/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', package_files('launch/*.py')),
        ('share/' + package_name + '/config', package_files('config/*.yaml')),
    ],
    install_requires=install_requires,
    extras_require=extras_require,
    python_requires='>=3.10',
    zip_safe=False,
    maintainer='adaqual_ros team',
    maintainer_email='adaqual@example.com',
    description='AdaQual-Diff weather restoration for ROS 2 camera streams, with YOLO '
                'before/after detection metrics.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'adaqual = adaqual_ros.cli.main:main',
            'restoration_node = adaqual_ros.ros.restoration_node:main',
            'detection_node = adaqual_ros.ros.detection_node:main',
            'metrics_node = adaqual_ros.ros.metrics_node:main',
            'camera_player = adaqual_ros.ros.player_node:main',
        ],
    },
)
