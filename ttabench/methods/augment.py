"""CoTTA's test-time augmentation, batched on the model's device, and the method's own RNG.

Wang et al., "Continual Test-Time Domain Adaptation", CVPR 2022, section 3.3; official
``cifar/cotta.py`` ``get_tta_transforms`` and ``my_transforms.py`` (the same in RoTTA's
``core/utils/custom_transforms.py`` and the Doebler/Marsden ``augmentations/transforms_cotta.py``;
specs/methods.md, section 5). One view of a batch:

    clip to [0, 1]; colour jitter in random order (brightness [0.6, 1.4], contrast [0.7, 1.3],
    saturation [0.5, 1.5], hue [-0.06, 0.06], gamma [0.7, 1.3], the image clamped to
    [1e-8, 1] before gamma); pad H/2 (edge); random affine (+-15 deg, translate 1/16 of the
    padded side, scale [0.9, 1.1], bilinear, fill 0); Gaussian blur (kernel 5, sigma in
    [0.001, 0.5]); centre crop H; horizontal flip (p 0.5); Gaussian noise (std 0.005); clip.

As officially, the whole batch tensor goes through the transform at once, so one draw of the
colour and geometric parameters is shared by every image of a view; the noise is per pixel.
ROID uses the variant ``padding_mode="reflect", blur_and_noise=False`` (Doebler
``get_tta_transforms(..., padding_mode="reflect", cotta_augs=False)``).

The operations are torchvision's transforms v2 functionals on the tensor's device; the random
parameters come from :class:`MethodRandom`, seeded from the run's method seed, so a run is
reproducible and a method's ``reset`` restarts its random sequence (a reset method behaves as a
fresh one).
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF


class MethodRandom:
    """A method's random streams: ``host`` (a CPU generator for scalar draws and memory-bank
    choices) and ``on(device)`` (a generator for tensors drawn on the model's device), both
    seeded from ``seed`` and restarted by ``reseed``."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.host = torch.Generator().manual_seed(self.seed)
        self._device: dict[str, torch.Generator] = {}

    def on(self, device: torch.device | str) -> torch.Generator:
        device = torch.device(device)
        if device.type == "cpu":
            return self.host
        key = str(device)
        if key not in self._device:
            self._device[key] = torch.Generator(device=device).manual_seed(self.seed + 1)
        return self._device[key]

    def uniform(self, low: float, high: float) -> float:
        return float(torch.empty(()).uniform_(low, high, generator=self.host))

    def reseed(self) -> None:
        self.host.manual_seed(self.seed)
        for generator in self._device.values():
            generator.manual_seed(self.seed + 1)

    def get_state(self) -> dict[str, torch.Tensor]:
        """Where every stream is now (for a method's snapshot)."""
        return {"host": self.host.get_state()} | {
            key: generator.get_state() for key, generator in self._device.items()
        }

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Back to ``state``; a device stream made after it goes back to its start."""
        self.host.set_state(state["host"])
        for key, generator in self._device.items():
            if key not in state:
                generator.manual_seed(self.seed + 1)
        for key, value in state.items():
            if key != "host":
                self.on(key).set_state(value)


class CoTTAAugment:
    """One random CoTTA view of a batch (B, C, H, W) of floats in [0, 1].

    Args:
        random: the method's :class:`MethodRandom`.
        padding_mode: ``edge`` (CoTTA, RoTTA) or ``reflect`` (ROID).
        blur_and_noise: CoTTA's blur and Gaussian noise (off for ROID).
        noise_std: std of the additive noise (official 0.005).
        soft: CoTTA's ``get_tta_transforms(soft=True)`` ranges (milder jitter, rotation, scale
            and blur), as Cygert et al.'s consistency criterion uses.
    """

    BRIGHTNESS, CONTRAST, SATURATION, HUE, GAMMA = (
        (0.6, 1.4),
        (0.7, 1.3),
        (0.5, 1.5),
        (-0.06, 0.06),
        (0.7, 1.3),
    )
    DEGREES, TRANSLATE, SCALE, BLUR_SIGMA = 15.0, 1 / 16, (0.9, 1.1), (0.001, 0.5)
    SOFT = {
        "BRIGHTNESS": (0.8, 1.2),
        "CONTRAST": (0.85, 1.15),
        "SATURATION": (0.75, 1.25),
        "HUE": (-0.03, 0.03),
        "GAMMA": (0.85, 1.15),
        "DEGREES": 8.0,
        "SCALE": (0.95, 1.05),
        "BLUR_SIGMA": (0.001, 0.25),
    }

    def __init__(
        self,
        random: MethodRandom,
        padding_mode: str = "edge",
        blur_and_noise: bool = True,
        noise_std: float = 0.005,
        soft: bool = False,
    ) -> None:
        if soft:
            for name, value in self.SOFT.items():
                setattr(self, name, value)
        self.random, self.padding_mode = random, padding_mode
        self.blur_and_noise, self.noise_std = bool(blur_and_noise), float(noise_std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = self.colour_jitter(x.clamp(0.0, 1.0))
        pad = int(height / 2)
        x = TF.pad(x, [pad, pad, pad, pad], padding_mode=self.padding_mode)
        x = self.random_affine(x)
        if self.blur_and_noise:  # the 5x5 blur reads 2 px around the crop: blur only that
            sigma = self.random.uniform(*self.BLUR_SIGMA)
            x = TF.center_crop(x, [height + 4, width + 4])
            x = TF.gaussian_blur(x, [5, 5], [sigma, sigma])
        x = TF.center_crop(x, [height, width])
        if self.random.uniform(0.0, 1.0) < 0.5:
            x = TF.horizontal_flip(x)
        if self.blur_and_noise:
            noise = torch.randn(x.shape, generator=self.random.on(x.device), device=x.device)
            x = x + noise * self.noise_std
        return x.clamp(0.0, 1.0)

    def colour_jitter(self, x: torch.Tensor) -> torch.Tensor:
        """``ColorJitterPro``: the five adjustments in a random order, a factor drawn for each."""
        order = torch.randperm(5, generator=self.random.host).tolist()
        for op in order:
            if op == 0:
                x = TF.adjust_brightness(x, self.random.uniform(*self.BRIGHTNESS))
            elif op == 1:
                x = TF.adjust_contrast(x, self.random.uniform(*self.CONTRAST))
            elif op == 2:
                x = TF.adjust_saturation(x, self.random.uniform(*self.SATURATION))
            elif op == 3:
                x = TF.adjust_hue(x, self.random.uniform(*self.HUE))
            else:  # clamped first: gamma of a value <= 0 has no gradient (official comment)
                x = TF.adjust_gamma(x.clamp(1e-8, 1.0), self.random.uniform(*self.GAMMA))
        return x

    def random_affine(self, x: torch.Tensor) -> torch.Tensor:
        """``RandomAffine(degrees 15, translate 1/16, scale (0.9, 1.1))``: torchvision's draw
        (angle, then whole-pixel translations rounded from a uniform, then scale)."""
        height, width = x.shape[-2:]
        angle = self.random.uniform(-self.DEGREES, self.DEGREES)
        tx = round(self.random.uniform(-self.TRANSLATE * width, self.TRANSLATE * width))
        ty = round(self.random.uniform(-self.TRANSLATE * height, self.TRANSLATE * height))
        scale = self.random.uniform(*self.SCALE)
        return TF.affine(
            x,
            angle=angle,
            translate=[tx, ty],
            scale=scale,
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR,
            fill=0.0,
        )
