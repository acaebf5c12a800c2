"""Full-reference image quality (PSNR, SSIM), whole-frame and per region, via scikit-image."""
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _as_float(img):
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return img.astype(np.float32)


def psnr(result, reference):
    """PSNR in dB of two images of equal shape (uint8, uint16 or float in [0, 1])."""
    a, b = _as_float(result), _as_float(reference)
    if a.shape != b.shape:
        raise ValueError(f'psnr needs equal shapes, got {a.shape} and {b.shape}')
    return float(peak_signal_noise_ratio(b, a, data_range=1.0))


def ssim(result, reference):
    """SSIM of two images of equal shape (colour images averaged over channels)."""
    a, b = _as_float(result), _as_float(reference)
    if a.shape != b.shape:
        raise ValueError(f'ssim needs equal shapes, got {a.shape} and {b.shape}')
    channel_axis = 2 if a.ndim == 3 else None
    win = min(7, min(a.shape[:2]) // 2 * 2 - 1)
    return float(structural_similarity(b, a, data_range=1.0, channel_axis=channel_axis,
                                       win_size=max(win, 3)))


def ssim_map(result, reference):
    """Per-pixel SSIM map (H, W), colour channels averaged."""
    a, b = _as_float(result), _as_float(reference)
    channel_axis = 2 if a.ndim == 3 else None
    _, full = structural_similarity(b, a, data_range=1.0, channel_axis=channel_axis, full=True)
    return full.mean(axis=2) if full.ndim == 3 else full


def regional_ssim(result, reference, cell):
    """Mean SSIM per cell x cell region: a (grid_h, grid_w) array (last row/col may be partial)."""
    full = ssim_map(result, reference)
    h, w = full.shape
    gh, gw = -(-h // cell), -(-w // cell)
    out = np.empty((gh, gw), dtype=np.float32)
    for i in range(gh):
        for j in range(gw):
            out[i, j] = full[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell].mean()
    return out
