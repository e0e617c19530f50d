"""The three networks fused into one module: teacher statistics, map quantiles and the fast path.

:meth:`FusedEfficientAD.anomaly_grid` is the whole inference in one function: ImageNet
normalisation, teacher, student and autoencoder forward passes, both maps and their normalisation,
under ``torch.inference_mode`` with channels-last tensors, and bfloat16/float16 autocast on CUDA.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from autovi_core.backbones import IMAGENET_MEAN, IMAGENET_STD
from autovi_core.training import autocast, mixed_precision_dtype

from .losses import map_quantiles

PAD = 4
"""Grid cells between the unpadded PDN's output and the input's stride-4 grid (16 px / stride 4)."""


class FusedEfficientAD(nn.Module):
    def __init__(self, teacher: nn.Module, student: nn.Module, autoencoder: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student
        self.autoencoder = autoencoder
        channels = teacher[-1].out_channels
        self.channels = channels
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer("teacher_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("teacher_std", torch.ones(1, channels, 1, 1))
        self.register_buffer("quantiles", torch.tensor([0.0, 1.0, 0.0, 1.0]))  # st q_a, st q_b, ae q_a, ae q_b

    def train(self, mode: bool = True) -> FusedEfficientAD:
        super().train(mode)
        self.teacher.eval()  # the teacher is frozen, always in eval mode
        return self

    @property
    def device(self) -> torch.device:
        return self.image_mean.device

    def normalise_input(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.device) - self.image_mean) / self.image_std

    def teacher_features(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher output on ImageNet-normalised ``x``, normalised per channel with the training statistics."""
        with torch.no_grad():
            return (self.teacher(x).float() - self.teacher_mean) / self.teacher_std

    def raw_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(map_ST, map_AE), each (N, h, w), for ImageNet-normalised ``x``."""
        t = self.teacher_features(x)
        s = self.student(x).float()
        a = self.autoencoder(x).float()
        c = self.channels
        return ((t - s[:, :c]) ** 2).mean(1), ((a - s[:, c:]) ** 2).mean(1)

    def combine(self, st: torch.Tensor, ae: torch.Tensor) -> torch.Tensor:
        q = self.quantiles
        st = 0.1 * (st - q[0]) / (q[1] - q[0]).clamp_min(1e-12)
        ae = 0.1 * (ae - q[2]) / (q[3] - q[2]).clamp_min(1e-12)
        return 0.5 * st + 0.5 * ae

    def anomaly_grid(self, images: torch.Tensor) -> torch.Tensor:
        """The fused fast path: (N, 3, S, S) images in [0, 1] -> (N, h, w) normalised anomaly grid (CPU float32)."""
        with torch.inference_mode():
            x = self.normalise_input(images).contiguous(memory_format=torch.channels_last)
            with autocast(self.device, mixed_precision_dtype(self.device)):
                st, ae = self.raw_maps(x)
            return self.combine(st.float(), ae.float()).cpu()

    @staticmethod
    def pad_to_input_grid(grid: torch.Tensor) -> torch.Tensor:
        """Extend (N, h, w) grids by the 4 unseen border cells (edge values repeated) to align with the input."""
        return F.pad(grid.unsqueeze(1), (PAD, PAD, PAD, PAD), mode="replicate").squeeze(1)

    def prepare_inference(self) -> FusedEfficientAD:
        """Eval mode, channels-last weights."""
        return self.eval().to(memory_format=torch.channels_last)

    @torch.no_grad()
    def set_teacher_statistics(self, images: torch.Tensor, batch: int = 16) -> None:
        """Channel mean and standard deviation of the raw teacher output over ``images`` ([0, 1])."""
        outputs = [self.teacher(self.normalise_input(b)).float() for b in images.split(batch)]
        stacked = torch.cat(outputs)
        self.teacher_mean.copy_(stacked.mean(dim=(0, 2, 3), keepdim=True))
        self.teacher_std.copy_(stacked.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))

    @torch.no_grad()
    def set_map_quantiles(self, images: torch.Tensor, q_a: float, q_b: float, batch: int = 16) -> None:
        """Quantiles q_a and q_b of map_ST and map_AE over defect-free ``images`` ([0, 1])."""
        self.prepare_inference()
        st, ae = zip(*(self.raw_maps(self.normalise_input(b).contiguous(memory_format=torch.channels_last)) for b in images.split(batch)))
        self.quantiles.copy_(torch.tensor([*map_quantiles(torch.cat(st), q_a, q_b), *map_quantiles(torch.cat(ae), q_a, q_b)]))
