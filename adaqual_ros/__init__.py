"""adaqual_ros: AdaQual-Diff weather restoration for ROS 2 camera streams."""
import os

# Offline safety: ultralytics must never try to download weights, fonts or packages at run time.
# setdefault keeps a user's explicit choice.
os.environ.setdefault('YOLO_OFFLINE', '1')
os.environ.setdefault('YOLO_AUTOINSTALL', '0')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

__version__ = '0.1.0'
