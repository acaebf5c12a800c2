"""
Camera-pipeline variation for training data: what real video frames have and photos lack.

Video frames are softer (optics, demosaicing, downscaled sensors), carry a little sensor noise and
are compressed. None of that is weather, so a quality estimator must not read it as weather: the
training pipelines apply `camera_look` to the clean crop *before* weather is synthesised (the
ground truth is then relative to the softened frame, which stays "clean"), and
`compression` to the frame *after* weather, as a camera encodes what it sees.
"""
import cv2
import numpy as np


def camera_look(image, rng, p=0.5):
    """
    With probability ``p``, give a clean uint8 RGB frame a random video-camera look.

    One or more of: a Gaussian blur (sigma 0.4-1.4), a down-and-up resize (factor 1.3-2.5), a
    zoom-in crop (1-2x, so flat surfaces fill the frame), mild sensor noise (sigma 1-3 of 255).
    The output has the input's size and dtype.
    """
    if rng.random() >= p:
        return image
    h, w = image.shape[:2]
    out = image
    if rng.random() < 0.4:
        zoom = float(rng.uniform(1.0, 2.0))
        ch, cw = max(8, round(h / zoom)), max(8, round(w / zoom))
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        out = cv2.resize(out[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.4, 1.4)))
    if rng.random() < 0.3:
        f = float(rng.uniform(1.3, 2.5))
        small = cv2.resize(out, (max(8, round(w / f)), max(8, round(h / f))),
                           interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:
        noise = rng.normal(0.0, float(rng.uniform(1.0, 3.0)), out.shape)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def compression(image, rng, p=0.4):
    """With probability ``p``, round-trip a uint8 RGB frame through JPEG at quality 35-90."""
    if rng.random() >= p:
        return image
    quality = int(rng.integers(35, 91))
    ok, buf = cv2.imencode('.jpg', image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return image
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
