"""Wasserstein-2 style: the distance between Gaussian fits of the image's and the style's features
(as crowsonkb's style-transfer-pytorch does), per layer, as a term on global statistics.

For features with mean mu and covariance Sigma (over positions), x the image and s the style:

    W2^2  = |mu_x - mu_s|^2 + tr(Sigma_x + Sigma_s - 2 (Sigma_s^1/2 Sigma_x Sigma_s^1/2)^1/2)
    w2_l  = W2^2 / (tr(Sigma_s) + |mu_s|^2)

Normalisation (as for the other terms, see ``_functional``): relative to the style's mean squared
feature norm E|f_s|^2 = tr(Sigma_s) + |mu_s|^2, so an image whose features are all zero scores 1
at every layer; layer weights are normalised to sum to 1.

Statistics: the mean of F (1, C) and the mean of F F^T (1, C, C) over the owned positions; both
are means, so tiles combine them by count, and Sigma = E[F F^T] - mu mu^T is formed afterwards.

Square roots: the style's (Sigma_s + eps I)^1/2 is computed once, with eigh (eigenvalues clamped
at 0). The image's side needs only a trace, tr(A^1/2) = sum_i sqrt(lambda_i) over the eigenvalues
of the symmetric A = S^1/2 (Sigma_x + eps I) S^1/2 (eigvalsh). Its gradient, V diag(1 / (2
sqrt(lambda))) V^T, has no eigenvector derivatives, so repeated eigenvalues (whose 1 / (lambda_i -
lambda_j) factors break eigenvector gradients) are harmless; what does break is 1 / sqrt(lambda) at
lambda = 0, and a covariance is rank-deficient whenever a layer has fewer positions than channels
(relu5_1 of a 256-px image: 256 positions, 512 channels). Hence the jitter (departs from the
exact W2): eps = 1e-3 * tr(Sigma_s) / C is added to *both* covariances, which is the exact W2
between both feature distributions blurred by the same N(0, eps I): still 0 when they match, and
A's eigenvalues stay >= eps^2. Its size is a trade: with 1e-5, differences of 1e-16 in the
statistics (tiles summed in another order) moved the float64 gradient by 1e-8 relative, through
A's smallest eigenvalues; with 1e-3 by 1e-11, while the value moved by under 0.3% on vgg16-hed
features of the example images (128 and 256 px, relu1_1 to relu5_1, rank-deficient ones
included). The matrix work runs in float64 for C <= 512 (every VGG layer; on one CPU core the
eigensolver's forward and backward take about 60 ms for 512 channels), else in the features'
dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from ._base import Window, Statistic, Term
from ._functional import EPS, gram
from ._registry import StyleLoss, StyleTargets, guided_moment_term, register_style_loss

__all__ = ["W2StyleTerm", "gaussian_fit", "gaussian_statistics", "sqrtm_psd", "wasserstein2_gaussian"]

#: Channel counts up to which the matrix square roots run in float64.
FLOAT64_UP_TO = 512
#: The covariance jitter, relative to the style covariance's mean eigenvalue tr(Sigma_s) / C.
JITTER = 1e-3


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One thread for LAPACK's symmetric eigensolvers on the CPU: threaded, MKL's slows down
    100-fold and more while other work keeps the cores busy (each of its many small steps waits
    for every thread; measured on 2 busy cores: 0.3-7 s for C = 512, 22 ms on one thread)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, C) and covariance (B, C, C) of (B, C, H, W) features over their H W positions
    (divided by H W, not H W - 1)."""
    flat = features.flatten(2)
    mean = flat.mean(dim=2)
    centred = flat - mean[..., None]
    return mean, centred @ centred.transpose(1, 2) / flat.shape[2]


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric PSD square root of (..., C, C) symmetric ``matrix`` (eigh; negative
    eigenvalues, from rounding, clamped at 0)."""
    with _one_cpu_thread(matrix.device):
        values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()[..., None, :]) @ vectors.transpose(-2, -1)


def _trace_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """tr(M^1/2) of (..., C, C) symmetric PSD M from its eigenvalues (see the module docstring)."""
    symmetric = (matrix + matrix.transpose(-2, -1)) / 2
    with _one_cpu_thread(matrix.device):
        values = torch.linalg.eigvalsh(symmetric)
    return values.clamp_min(0).sqrt().sum(dim=-1)


def wasserstein2_gaussian(mean: torch.Tensor, covariance: torch.Tensor, target_mean: torch.Tensor,
                          target_covariance: torch.Tensor) -> torch.Tensor:
    """Squared W2 distance between N(mean, covariance) and N(target_mean, target_covariance):
    means (B, C), covariances (B, C, C) -> (B,). Exact (no jitter; the reference)."""
    root = sqrtm_psd(target_covariance)
    cross = _trace_sqrt(root @ covariance @ root)
    traces = torch.diagonal(covariance, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(
        target_covariance, dim1=-2, dim2=-1).sum(-1)
    return (mean - target_mean).pow(2).sum(-1) + traces - 2 * cross


def gaussian_statistics(features: Mapping[str, torch.Tensor], window: Window, layers: Sequence[str],
                        strides: Mapping[str, int]) -> dict[str, Statistic]:
    """{"<layer>/mean": (mean of F (1, C), count), "<layer>/second": (mean of F F^T (1, C, C),
    count)} over the window's owned positions (layers where it owns none are left out)."""
    stats = {}
    for layer in layers:
        inside = window.owned(strides.get(layer, 1), features[layer])
        positions = inside.shape[2] * inside.shape[3]
        if positions:
            second = gram(inside)
            stats[f"{layer}/mean"] = Statistic(inside.mean(dim=(2, 3), dtype=second.dtype), positions)
            stats[f"{layer}/second"] = Statistic(second, positions)
    return stats


class W2StyleTerm(Term):
    """sum_l w_l W2^2(image_l, style_l) / (tr(Sigma_s) + |mu_s|^2) (see the module docstring).

    Args:
        targets: the style's gaussian_statistics means, {"<layer>/mean": (1, C), "<layer>/second":
            (1, C, C)} (e.g. several styles' blended with blend_statistics).
        layer_weights: layer -> weight (normalised to sum 1).
        jitter: eps relative to tr(Sigma_s) / C, added to both covariances.
    """

    name = "style"

    def __init__(self, targets: Mapping[str, torch.Tensor], layer_weights: Mapping[str, float],
                 strides: Mapping[str, int] | None = None, *, jitter: float = JITTER) -> None:
        super().__init__(strides)
        self.layers = tuple(layer_weights)
        total = sum(layer_weights.values())
        self._mean: dict[str, torch.Tensor] = {}
        self._root: dict[str, torch.Tensor] = {}
        self._trace: dict[str, torch.Tensor] = {}
        self._eps: dict[str, torch.Tensor] = {}
        self._scale: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            second = targets[f"{layer}/second"].detach()
            channels = second.shape[-1]
            dtype = torch.float64 if channels <= FLOAT64_UP_TO else second.dtype
            mean = targets[f"{layer}/mean"].detach().reshape(channels).to(dtype)
            covariance = second.reshape(channels, channels).to(dtype) - torch.outer(mean, mean)
            eps = jitter * covariance.trace().clamp_min(EPS) / channels
            covariance = covariance + eps * torch.eye(channels, dtype=dtype, device=covariance.device)
            # Computed once: the style's square root, trace and magnitude do not change.
            self._mean[layer], self._root[layer], self._eps[layer] = mean, sqrtm_psd(covariance), eps
            self._trace[layer] = covariance.trace()
            magnitude = second.reshape(channels, channels).to(dtype).trace().clamp_min(EPS)
            self._scale[layer] = layer_weights[layer] / total / magnitude

    def statistics(self, features: Mapping[str, torch.Tensor], window: Window) -> dict[str, Statistic]:
        return gaussian_statistics(features, window, self.layers, self.strides)

    def layer_distance(self, layer: str, mean: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """W2^2 (with the jitter) of one layer's image statistics, mean (1, C) and E[F F^T]
        (1, C, C), against the style's: a scalar in the matrix work's dtype."""
        root, eps = self._root[layer], self._eps[layer]
        channels = root.shape[0]
        mean = mean.reshape(channels).to(root.dtype)
        covariance = second.reshape(channels, channels).to(root.dtype) - torch.outer(mean, mean)
        covariance = covariance + eps * torch.eye(channels, dtype=root.dtype, device=root.device)
        cross = _trace_sqrt(root @ covariance @ root)
        return (mean - self._mean[layer]).pow(2).sum() + covariance.trace() + self._trace[layer] - 2 * cross

    def global_value(self, stats: Mapping[str, Statistic]) -> torch.Tensor:
        style: torch.Tensor | None = None
        for layer in self.layers:
            mean, second = stats[f"{layer}/mean"].mean, stats[f"{layer}/second"].mean
            error = (self.layer_distance(layer, mean, second) * self._scale[layer]).to(second.dtype)
            style = error if style is None else style + error
        assert style is not None
        return style


def _build(targets: StyleTargets) -> Term:
    return W2StyleTerm(targets.blended_targets(gaussian_statistics), targets.layer_weights, targets.strides)


def _build_guided(targets: StyleTargets) -> Term:
    """W2 between each region's guided Gaussian fits (m^2-weighted means and second moments)."""
    return guided_moment_term(targets, ("mean", "second"),
                              lambda found: W2StyleTerm(found, targets.layer_weights, targets.strides))


W2 = register_style_loss(StyleLoss("w2", _build, _build_guided))
