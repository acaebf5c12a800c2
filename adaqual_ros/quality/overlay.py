"""A frame with its quality map drawn over it as heat: the node's `quality_map/visualization`,
`adaqual restore --visualization` and the demo's frame strip."""
import cv2
import numpy as np

from adaqual_ros.io.codec import to_uint8


def quality_overlay(image, scores, cell, max_width=0):
    """
    An rgb8 picture of a frame blended half and half with its quality grid as heat (red =
    poor, blue = pristine).

    Args:
        image (`np.ndarray`): the frame, RGB, RGBA (alpha left out) or one plane; uint8, uint16
            or finite float in [0, 1] (`codec.to_uint8`).
        scores (`np.ndarray`, (gh, gw)): quality scores 1-5 per cell.
        cell (`int`): cell size in pixels; cells cover the frame from its top left corner, as
            in `QualityMap` (the last row and column may be cut).
        max_width (`int`): frames wider than this are scaled down to it first; 0 = as they are.
    """
    rgb = to_uint8(image[..., :3] if image.ndim == 3 else image)
    if rgb.ndim == 2:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
    height, width = rgb.shape[:2]
    scores = np.asarray(scores, np.float32)
    if scores.ndim != 2 or -(-height // cell) != scores.shape[0] \
            or -(-width // cell) != scores.shape[1]:
        raise ValueError(f'a {scores.shape} grid of {cell} px cells does not cover a '
                         f'{height}x{width} frame')
    levels = np.clip((5.0 - scores) / 4.0 * 255.0, 0, 255).astype(np.uint8)
    levels = np.repeat(np.repeat(levels, cell, axis=0), cell, axis=1)[:height, :width]
    if max_width and width > max_width:
        height, width = max(1, round(height * max_width / width)), max_width
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        levels = cv2.resize(levels, (width, height), interpolation=cv2.INTER_NEAREST)
    heat = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 0.5, heat, 0.5, 0.0)
