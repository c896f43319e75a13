"""Corruption names, groups and per-severity parameter tables.

Facts transcribed from Hendrycks & Dietterich, ICLR 2019, "Benchmarking Neural Network Robustness
to Common Corruptions and Perturbations": the generator scripts ``make_cifar_c.py`` (profile
``cifar``, 32 px) and ``make_imagenet_c.py`` (profile ``imagenet``, 224 px) of
hendrycks/robustness, as tabulated in ``shared/specs/corruptions-and-models.md`` section 2.2.
Severities are 1..5; entry ``i`` of a table is severity ``i + 1``. No code is taken from the
scripts, only their numbers.
"""

from __future__ import annotations

from typing import Any

#: The 15 benchmark corruptions in the order of every generator script, Tent and CoTTA (not
#: RobustBench's ``data.CORRUPTIONS``, which is shuffled).
COMMON_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
#: The 4 validation ("extra") corruptions, appended in the scripts' order.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS
PROFILES: tuple[str, ...] = ("cifar", "imagenet")

#: Groups as in ``imagecorruptions.get_corruption_names``; extras are grouped by their kind.
GROUPS: dict[str, str] = {
    **dict.fromkeys(COMMON_CORRUPTIONS[0:3], "noise"),
    **dict.fromkeys(COMMON_CORRUPTIONS[3:7], "blur"),
    **dict.fromkeys(COMMON_CORRUPTIONS[7:11], "weather"),
    **dict.fromkeys(COMMON_CORRUPTIONS[11:15], "digital"),
    "speckle_noise": "noise",
    "gaussian_blur": "blur",
    "spatter": "weather",
    "saturate": "digital",
}

# Elastic parameters are image-size multiples in the scripts: (scale, (alpha, sigma, jitter)).
# ImageNet's scale is 244, "should have been 224" per the script's own comment; kept as is.
_ELASTIC_CIFAR = (
    (0, 0, 0.08),
    (0.05, 0.2, 0.07),
    (0.08, 0.06, 0.06),
    (0.1, 0.04, 0.05),
    (0.1, 0.03, 0.03),
)
_ELASTIC_IMAGENET = (
    (2, 0.7, 0.1),
    (2, 0.08, 0.2),
    (0.05, 0.01, 0.02),
    (0.07, 0.01, 0.02),
    (0.12, 0.01, 0.02),
)

#: name -> profile -> 5 parameter entries (severity 1..5).
TABLES: dict[str, dict[str, tuple[Any, ...]]] = {
    # std of additive N(0, std) noise on [0, 1]
    "gaussian_noise": {
        "cifar": (0.04, 0.06, 0.08, 0.09, 0.10),
        "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38),
    },
    # photon count scale lambda: Poisson(x * lambda) / lambda
    "shot_noise": {
        "cifar": (500, 250, 100, 75, 50),
        "imagenet": (60, 25, 12, 5, 3),
    },
    # salt-and-pepper amount (per element and channel)
    "impulse_noise": {
        "cifar": (0.01, 0.02, 0.03, 0.05, 0.07),
        "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27),
    },
    # std of multiplicative noise: x + x * N(0, std)
    "speckle_noise": {
        "cifar": (0.06, 0.1, 0.12, 0.16, 0.2),
        "imagenet": (0.15, 0.2, 0.35, 0.45, 0.6),
    },
    # (disk radius, anti-alias Gaussian sigma)
    "defocus_blur": {
        "cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    },
    # Gaussian sigma (skimage.filters.gaussian, mode 'nearest', truncate 4)
    "gaussian_blur": {
        "cifar": (0.4, 0.6, 0.7, 0.8, 1),
        "imagenet": (1, 2, 3, 4, 6),
    },
    # (sigma, max_delta, iterations)
    "glass_blur": {
        "cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    },
    # (ImageMagick radius, sigma); angle ~ U(-45, 45) degrees
    "motion_blur": {
        "cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    },
    # zoom factors np.arange(1, end, step): (end, step)
    "zoom_blur": {
        "cifar": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
        "imagenet": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
    },
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend); angle ~ U(-135, -45)
    "snow": {
        "cifar": (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
        "imagenet": (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
    },
    # (image weight, frost texture weight, texture resize factor): make_cifar_c.py shrinks the
    # textures by cv2.resize(fx=fy=0.2) before its 32 px crop; make_imagenet_c.py crops 224 px
    # from the full-size photographs.
    "frost": {
        "cifar": (
            (1, 0.2, 0.2),
            (1, 0.3, 0.2),
            (0.9, 0.4, 0.2),
            (0.85, 0.4, 0.2),
            (0.75, 0.45, 0.2),
        ),
        "imagenet": ((1, 0.4, 1), (0.8, 0.6, 1), (0.7, 0.7, 1), (0.65, 0.7, 1), (0.6, 0.75, 1)),
    },
    # (strength, wibble decay) of the diamond-square plasma
    "fog": {
        "cifar": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "imagenet": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    },
    # additive shift of the HSV value channel
    "brightness": {
        "cifar": (0.05, 0.1, 0.15, 0.2, 0.3),
        "imagenet": (0.1, 0.2, 0.3, 0.4, 0.5),
    },
    # factor towards the per-channel mean
    "contrast": {
        "cifar": (0.75, 0.5, 0.4, 0.3, 0.15),
        "imagenet": (0.4, 0.3, 0.2, 0.1, 0.05),
    },
    # (scale, (alpha, sigma, affine jitter) as multiples of scale)
    "elastic_transform": {
        "cifar": tuple((32, p) for p in _ELASTIC_CIFAR),
        "imagenet": tuple((244, p) for p in _ELASTIC_IMAGENET),
    },
    # relative size of the PIL BOX downsampling
    "pixelate": {
        "cifar": (0.95, 0.9, 0.85, 0.75, 0.65),
        "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25),
    },
    # PIL JPEG quality
    "jpeg_compression": {
        "cifar": (80, 65, 58, 50, 40),
        "imagenet": (25, 18, 15, 10, 7),
    },
    # (loc, scale, sigma, threshold, intensity, mode 0 = water / 1 = mud)
    "spatter": {
        "cifar": (
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ),
        "imagenet": (
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1),
        ),
    },
    # HSV saturation s * a + b: (a, b)
    "saturate": {
        "cifar": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    },
}
