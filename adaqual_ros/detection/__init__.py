"""
adaqual_ros.detection: offline YOLO detection returning plain dataclasses.

    from adaqual_ros.detection import Detector, find_detector
    dets = Detector(find_detector(), conf=0.25).detect(rgb_uint8)
"""
from adaqual_ros.detection.yolo import (
    NO_DETECTOR_MESSAGE,
    Detections,
    Detector,
    DetectorError,
    draw_detections,
    find_detector,
)

__all__ = ['Detections', 'Detector', 'DetectorError', 'draw_detections', 'find_detector',
           'NO_DETECTOR_MESSAGE']
