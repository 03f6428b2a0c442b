"""Stateless inference core for LeRobot's Diffusion Policy: observation history + noise -> actions.

Why this exists: ``DiffusionPolicy.select_action`` keeps observation-history queues and an
action queue, and each chunk runs an iterative denoising loop that draws random numbers.
This module re-expresses one chunk prediction (``generate_actions``) as a pure function:

    forward(state, *images, noise[, step_noise]) -> action_chunk

with the eval-mode center crop, normalization, the image encoders, the whole denoising
loop over the checkpoint's scheduler and ``num_inference_steps`` (a loop over per-step
tables, exported as one loop: :class:`DenoisingLoop`) and the unnormalization inside. The history lives on the
host (:mod:`policy_export.runtime.history`), so one served model can batch many robots.

Randomness is an input, never an op in the graph:

- ``noise`` ``[B, horizon, action_dim]`` is the initial sample (LeRobot's ``noise=`` argument).
- DDPM also adds fresh noise at every step but the last (``scheduler.step`` draws it with
  ``randn_tensor``). Those draws are the input ``step_noise`` ``[B, n_draws, horizon,
  action_dim]``, in the order the loop uses them. The alternatives were worse: a seed input
  plus an in-graph generator cannot reproduce torch's CPU generator in ONNX Runtime or
  TensorRT (so parity with LeRobot could never be exact and every runtime would differ),
  and a baked-in constant would make every chunk use the same draws. As inputs, parity is
  exact (LeRobot is fed the same draws), the core is deterministic in every runtime, and
  the host chooses the distribution's source (a seeded generator for reproducible runs).
  The cost is ``n_draws * horizon * action_dim`` floats per request (99 x 16 x 2 at the
  default config: 12.7 kB). DDIM with ``eta = 0`` (LeRobot's call) draws nothing: no
  ``step_noise`` input.

Op order follows LeRobot's and diffusers' term by term (see the comments), because float32
results change with reordering and this core is meant to be equal to LeRobot's, not close.
The scheduler's per-step scalars are computed here once, with the scheduler's own tensors
and the same 0-d float32 arithmetic ``scheduler.step`` performs, and stored as a float32 table.

Like ``act.py`` it imports nothing but torch: the network and the scheduler are passed in
(duck-typed).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from policy_export_wrappers.act import IMAGE_FORMATS, FeatureNormalizer

SCHEDULERS = ("DDPM", "DDIM")
PREDICTION_TYPES = ("epsilon", "sample")


def _f(x: Tensor | float) -> float:
    """A 0-d float32 scheduler value as the Python float a traced graph stores (exact: float32 -> float64 -> float32)."""
    return float(torch.as_tensor(x, dtype=torch.float32))


def scheduler_steps(scheduler: Any, kind: str, num_inference_steps: int) -> list[tuple[int, dict[str, float], bool]]:
    """``(timestep, scalars, draws_noise)`` per step, from ``scheduler`` after ``set_timesteps``.

    The scalars are computed with the same 0-d float32 tensor expressions as diffusers'
    ``DDPMScheduler.step`` / ``DDIMScheduler.step`` (0.42), so multiplying by them in the
    graph gives the same float32 numbers as the scheduler does.
    """
    cfg = scheduler.config
    if kind not in SCHEDULERS:
        raise ValueError(f"unknown noise scheduler {kind!r}; expected one of {SCHEDULERS}")
    if getattr(cfg, "thresholding", False):
        raise ValueError("scheduler thresholding is not supported (LeRobot does not enable it)")
    if cfg.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {cfg.prediction_type!r}; expected one of {PREDICTION_TYPES}")
    if kind == "DDPM" and getattr(cfg, "variance_type", "fixed_small") != "fixed_small":
        raise ValueError(f"DDPM variance_type {cfg.variance_type!r} is not supported (LeRobot uses fixed_small)")
    scheduler.set_timesteps(num_inference_steps)
    ac = scheduler.alphas_cumprod
    steps = []
    for t_tensor in scheduler.timesteps:
        t = int(t_tensor)
        if kind == "DDPM":
            prev_t = scheduler.previous_timestep(t)
            alpha_prod_t = ac[t]
            alpha_prod_t_prev = ac[prev_t] if prev_t >= 0 else scheduler.one
            beta_prod_t = 1 - alpha_prod_t
            beta_prod_t_prev = 1 - alpha_prod_t_prev
            current_alpha_t = alpha_prod_t / alpha_prod_t_prev
            current_beta_t = 1 - current_alpha_t
            coeffs = {
                "sqrt_beta": _f(beta_prod_t ** (0.5)),
                "sqrt_alpha": _f(alpha_prod_t ** (0.5)),
                "orig": _f((alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t),
                "cur": _f(current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t),
            }
            draws = t > 0
            if draws:
                coeffs["std"] = _f(scheduler._get_variance(t) ** 0.5)
        else:
            prev_t = t - cfg.num_train_timesteps // scheduler.num_inference_steps
            alpha_prod_t = ac[t]
            alpha_prod_t_prev = ac[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
            beta_prod_t = 1 - alpha_prod_t
            std_dev_t = 0.0 * scheduler._get_variance(t, prev_t) ** (0.5)  # eta = 0: LeRobot's call
            coeffs = {
                "sqrt_beta": _f(beta_prod_t ** (0.5)),
                "sqrt_alpha": _f(alpha_prod_t ** (0.5)),
                "dir": _f((1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5)),
                "prev_sqrt_alpha": _f(alpha_prod_t_prev ** (0.5)),
            }
            draws = False
        steps.append((t, coeffs, draws))
    return steps


#: Columns of :class:`DenoisingLoop`'s per-step scalar table ``c``, indexed by number in the loop
#: (TorchScript cannot read module-level ints). The update is ``sample = c[2] * pred_original +
#: c[3] * (sample for DDPM | pred_epsilon for DDIM)``, plus ``c[4] * draw`` for DDPM.
_COLUMNS = {
    "DDPM": ("sqrt_beta", "sqrt_alpha", "orig", "cur", "std"),
    "DDIM": ("sqrt_beta", "sqrt_alpha", "prev_sqrt_alpha", "dir", "std"),
}


class Conv1dAsMatMul(nn.Module):
    """An ``nn.Conv1d`` (groups 1, dilation 1, zero padding) as one matrix product over the whole batch.

    Why: the U-Net's sequences are short (``horizon`` 16, then 8 and 4) and its kernels large
    (2048 x 2048 x 5 at the default size). ONNX Runtime's and oneDNN's convolutions run one
    GEMM per sample with N = sequence length, so at batch 8 every step streams the 1 GB of
    weights 8 times. Here the k shifted views of the padded input are stacked (im2col) and
    multiplied once: ``[B, L, k*C] @ [k*C, C_out]`` is a single GEMM with M = B*L that reads
    the weights once per step. At the default size on 2 cores, ONNX Runtime took 24.8 s a chunk
    at batch 8 with Conv and 9.5-12.3 s with this; batch 1 stayed at ~3.7-4.7 s (BENCHMARKS.md,
    Diffusion Policy). Same products and sums as the convolution, summed in another order
    (float32 round-off; parity with LeRobot stays within 1e-4).
    """

    if TYPE_CHECKING:  # buffers
        weight: Tensor
        bias: Tensor | None

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        if conv.groups != 1 or conv.dilation[0] != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"Conv1dAsMatMul takes plain convolutions, not {conv}")
        self.kernel = int(conv.kernel_size[0])
        self.stride = int(conv.stride[0])
        self.pad = int(conv.padding[0])
        with torch.no_grad():
            # [C_out, C_in, k] -> [k * C_in, C_out], rows ordered (tap, channel) like the stacked views.
            weight = conv.weight.detach().permute(2, 1, 0).reshape(-1, conv.out_channels).contiguous()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:  # [B, C_in, L] -> [B, C_out, L_out]
        # Channels last before stacking, so the product's left side is [B, L_out, k*C_in] as laid out:
        # a transposed left side would make ONNX Runtime fuse the transpose into a per-sample GEMM again.
        x = x.transpose(1, 2)
        if self.pad:
            x = nn.functional.pad(x, (0, 0, self.pad, self.pad))
        length = (x.shape[1] - self.kernel) // self.stride + 1
        span = self.stride * (length - 1) + 1
        cols = torch.cat([x[:, j : j + span : self.stride] for j in range(self.kernel)], dim=2)
        y = torch.matmul(cols, self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.transpose(1, 2)


def _with_matmul_convs(modules: Any) -> Any:
    """A copy of ``modules`` (LeRobot's, left untouched) with every ``nn.Conv1d`` as :class:`Conv1dAsMatMul`.

    Parameters are shared, not copied (the memo), except the re-laid-out conv weights."""
    shared = {id(t): t for t in [*modules.parameters(), *modules.buffers()]}
    out = copy.deepcopy(modules, shared)
    for child in list(out.modules()):
        for attr, sub in list(child.named_children()):
            if type(sub) is nn.Conv1d:
                setattr(child, attr, Conv1dAsMatMul(sub))
    return out


class ConditionalUnet1d(nn.Module):
    """``DiffusionConditionalUnet1d.forward`` after its timestep encoder (precomputed per step)."""

    # LeRobot's ModuleLists of module triples, duck-typed (unpacked below).
    down_modules: Any
    mid_modules: Any
    up_modules: Any
    final_conv: nn.Module

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.down_modules = _with_matmul_convs(unet.down_modules)
        self.mid_modules = _with_matmul_convs(unet.mid_modules)
        self.up_modules = _with_matmul_convs(unet.up_modules)
        self.final_conv = _with_matmul_convs(unet.final_conv)

    def forward(self, x: Tensor, global_feature: Tensor) -> Tensor:
        x = x.permute(0, 2, 1)  # "b t d -> b d t"
        skips: list[Tensor] = []
        for resnet, resnet2, downsample in self.down_modules:
            x = resnet(x, global_feature)
            x = resnet2(x, global_feature)
            skips.append(x)
            x = downsample(x)
        for mid in self.mid_modules:
            x = mid(x, global_feature)
        for resnet, resnet2, upsample in self.up_modules:
            x = torch.cat((x, skips.pop()), dim=1)
            x = resnet(x, global_feature)
            x = resnet2(x, global_feature)
            x = upsample(x)
        x = self.final_conv(x)
        return x.permute(0, 2, 1)  # "b d t -> b t d"


class DenoisingLoop(nn.Module):
    """The scheduler loop as one loop over per-step tables, not one graph per step.

    Why a table-driven loop: at LeRobot's default configuration (100 DDPM steps, a 250M
    parameter U-Net) an unrolled graph holds 100 copies of the U-Net's ops; the ONNX
    exporter needed over 30 minutes for it. Each step differs only in its timestep
    embedding row, five scalars and which ``step_noise`` draw it adds, so those are
    tables indexed by the step counter, and :func:`script_for_export` turns this Python
    loop into one TorchScript ``prim::Loop`` (an ONNX ``Loop``) around one traced U-Net.
    The arithmetic is the unrolled one's: the same float32 values multiply the same
    tensors in the same order. A step that draws no noise (DDPM's last, ``t = 0``) has
    ``std = 0`` and adds ``0 * draw``, which is ``+-0`` and leaves ``sample``'s value unchanged.
    """

    # TorchScript reads these as constants (class annotations would be strings here, which it cannot read).
    __constants__ = ("ddpm", "epsilon", "clip", "draws")
    if TYPE_CHECKING:  # the buffers, for mypy only, for the same reason
        time_embeds: Tensor
        coeffs: Tensor
        draw_index: Tensor

    def __init__(
        self,
        unet: nn.Module,
        time_embeds: Tensor,
        coeffs: Sequence[dict[str, float]],
        draws: Sequence[bool],
        *,
        kind: str,
        epsilon: bool,
        clip: float | None,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.ddpm = kind == "DDPM"
        self.epsilon = epsilon
        self.clip: float | None = clip
        table = [[c.get(name, 0.0) for name in _COLUMNS[kind]] for c in coeffs]
        self.register_buffer("time_embeds", time_embeds)  # [n_steps, diffusion_step_embed_dim * 4]
        self.register_buffer("coeffs", torch.tensor(table, dtype=torch.float32))  # [n_steps, 5]
        self.n_draws = sum(bool(d) for d in draws)
        self.draws = self.n_draws > 0
        index, seen = [], 0
        for d in draws:  # which step_noise draw each step adds; a step that draws none re-reads a valid one (x 0)
            index.append(min(seen, max(self.n_draws - 1, 0)))
            seen += bool(d)
        self.register_buffer("draw_index", torch.tensor(index, dtype=torch.long))

    def forward(self, sample: Tensor, global_cond: Tensor, step_noise: Tensor) -> Tensor:
        """``step_noise`` is read only when the scheduler draws (``self.draws``); callers without draws
        pass any tensor (not None: an optional input becomes an ONNX Optional ONNX Runtime cannot load)."""
        batch = global_cond.shape[0]
        clip = self.clip
        # The count is the table's row count, not a Python int: the ONNX exporter unrolls a loop over
        # a constant, and keeps this one as a Loop with the step count as its trip count (which
        # TensorRT imports as a counted loop).
        for i in range(
            self.coeffs.shape[0]
        ):  # not ``for ... in range``: the ONNX exporter unrolls constant-count for loops
            c = self.coeffs[i]
            time_embed = self.time_embeds[i].unsqueeze(0).expand(batch, -1)
            global_feature = torch.cat([time_embed, global_cond], dim=-1)
            model_output = self.unet(sample, global_feature)
            # diffusers 0.42 DDPMScheduler.step / DDIMScheduler.step, term by term.
            if self.epsilon:
                pred_original = (sample - c[0] * model_output) / c[1]
                pred_epsilon = model_output
            else:
                pred_original = model_output
                pred_epsilon = (sample - c[1] * pred_original) / c[0]
            if clip is not None:
                pred_original = pred_original.clamp(-clip, clip)
            if self.ddpm:
                sample = c[2] * pred_original + c[3] * sample
                if self.draws:
                    sample = sample + c[4] * step_noise.index_select(1, self.draw_index[i].view(1)).squeeze(1)
            else:
                sample = c[2] * pred_original + c[3] * pred_epsilon
        return sample


def script_for_export(core: DiffusionCore, example: Sequence[Tensor]) -> DiffusionCore:
    """``core`` with its denoising loop as TorchScript (a traced U-Net inside a scripted loop),
    so ``torch.onnx.export``'s tracer keeps the loop as ``prim::Loop`` instead of unrolling it.

    ``example`` is the core's positional inputs, used only for the U-Net's trace shapes (the
    batch axis stays symbolic: the trace records ``x.shape[0]`` as a size op).
    """
    loop = core.denoise
    assert isinstance(loop, DenoisingLoop), "script_for_export takes an unscripted core"
    n_cams = len(core.image_shapes)
    noise = example[n_cams + 1]
    with torch.no_grad():
        state = core.state_normalizer(example[0])
        global_cond = core._global_cond(state, example[1 : n_cams + 1])
        feature = torch.cat([loop.time_embeds[:1].expand(noise.shape[0], -1), global_cond], dim=-1)
        traced_unet = torch.jit.trace(loop.unet, (noise, feature), check_trace=False)
    return _replaced(core, denoise=torch.jit.script(_replaced(loop, unet=traced_unet)))


def _replaced(module: nn.Module, **children: nn.Module) -> Any:
    """A shallow copy of ``module`` with some children swapped; ``module`` itself is untouched."""
    out = copy.copy(module)
    out._modules = dict(module._modules)
    for name, child in children.items():
        setattr(out, name, child)
    return out


class DiffusionCore(nn.Module):
    """``forward(state, *images, noise[, step_noise]) -> action_chunk`` for a trained Diffusion Policy.

    Inputs: ``state`` float32 ``[B, n_obs_steps, state_dim]`` in robot units; per camera, in
    the policy's camera order, float32 ``[B, n_obs_steps, 3, H, W]`` in [0, 1] or, with
    ``image_format="uint8"``, raw frames ``[B, n_obs_steps, H, W, 3]``; ``noise`` float32
    ``[B, horizon, action_dim]``; for DDPM ``step_noise`` float32 ``[B, n_draws, horizon,
    action_dim]``. Output: ``action_chunk`` float32 ``[B, n_action_steps, action_dim]`` in
    robot units, the slice starting at ``n_obs_steps - 1`` (``generate_actions``).
    """

    # LeRobot's submodules, duck-typed: this module imports nothing from LeRobot to name them. Any where
    # they are indexed or unpacked (one encoder or a ModuleList of them; ModuleLists of module triples).
    rgb_encoder: Any

    def __init__(
        self,
        diffusion_model: Any,
        *,
        image_shapes: Sequence[Sequence[int]],
        state_normalizer: FeatureNormalizer,
        image_normalizers: Sequence[FeatureNormalizer],
        action_unnormalizer: FeatureNormalizer,
        image_format: str = "float32",
    ) -> None:
        super().__init__()
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        if len(image_normalizers) != len(image_shapes) or not image_shapes:
            raise ValueError("one image normalizer per camera, and at least one camera, are required")
        cfg = diffusion_model.config
        if getattr(cfg, "resize_shape", None) is not None:
            raise ValueError("resize_shape is not supported yet; export a policy trained with crop_shape only")
        self.uint8_images = image_format == "uint8"
        self.n_obs_steps = int(cfg.n_obs_steps)
        self.horizon = int(cfg.horizon)
        self.n_action_steps = int(cfg.n_action_steps)
        self.image_shapes = [tuple(int(d) for d in s) for s in image_shapes]
        self.separate_encoders = bool(cfg.use_separate_rgb_encoder_per_camera)
        self.rgb_encoder = diffusion_model.rgb_encoder
        unet = diffusion_model.unet
        self.state_normalizer = state_normalizer
        self.image_normalizers = nn.ModuleList(image_normalizers)
        self.action_unnormalizer = action_unnormalizer
        self.kind = str(cfg.noise_scheduler_type)
        self.crop = self._crop_box(cfg.crop_shape)

        num_steps = int(diffusion_model.num_inference_steps)
        param = next(diffusion_model.parameters())
        steps = scheduler_steps(diffusion_model.noise_scheduler, self.kind, num_steps)
        with torch.no_grad():
            # The U-Net's timestep encoder sees torch.full((B,), t, long) in LeRobot; it does not
            # depend on the observation, so it is a per-step constant here (computed at batch 1).
            embeds = [
                unet.diffusion_step_encoder(torch.full((1,), t, dtype=torch.long, device=param.device)).clone()
                for t, _, _ in steps
            ]
        loop = DenoisingLoop(
            ConditionalUnet1d(unet),
            torch.cat(embeds),
            [c for _, c, _ in steps],
            [d for _, _, d in steps],
            kind=self.kind,
            epsilon=cfg.prediction_type == "epsilon",
            clip=float(cfg.clip_sample_range) if cfg.clip_sample else None,
        )
        self.denoise: nn.Module = loop  # a DenoisingLoop, or its scripted copy (script_for_export)
        self.n_draws = loop.n_draws

    def _crop_box(self, crop_shape: Sequence[int] | None) -> tuple[int, int, int, int] | None:
        """torchvision's ``CenterCrop`` on a tensor (no padding: LeRobot checks the crop fits):
        top = int(round((H - h) / 2)), left likewise."""
        if crop_shape is None:
            return None
        _, height, width = self.image_shapes[0]
        ch, cw = int(crop_shape[0]), int(crop_shape[1])
        if ch > height or cw > width:
            raise ValueError(f"crop_shape {[ch, cw]} does not fit images {[height, width]}")
        top = round((height - ch) / 2.0)
        left = round((width - cw) / 2.0)
        return top, left, ch, cw

    def _encode(self, encoder: Any, x: Tensor) -> Tensor:
        """``DiffusionRgbEncoder.forward`` in eval mode: center crop, backbone, spatial softmax, linear, ReLU."""
        if self.crop is not None:
            top, left, ch, cw = self.crop
            x = x[..., top : top + ch, left : left + cw]
        x = torch.flatten(encoder.pool(encoder.backbone(x)), start_dim=1)
        return encoder.relu(encoder.out(x))

    def _global_cond(self, state: Tensor, images: Sequence[Tensor]) -> Tensor:
        """``_prepare_global_conditioning``: per-camera features over (b s), concatenated camera-major."""
        batch, steps = state.shape[0], state.shape[1]
        feats = []
        for i, (image, normalizer) in enumerate(zip(images, self.image_normalizers, strict=True)):
            if self.uint8_images:
                image = (image.to(torch.float32) / 255).permute(0, 1, 4, 2, 3)
            image = normalizer(image)
            encoder = self.rgb_encoder[i] if self.separate_encoders else self.rgb_encoder
            f = self._encode(encoder, image.flatten(0, 1))  # "b s ... -> (b s) ..."
            feats.append(f.reshape(batch, steps, -1))
        # "(n b s) d -> b s (n d)": cameras concatenated along the feature axis.
        return torch.cat([state, *feats], dim=-1).flatten(start_dim=1)

    def forward(self, state: Tensor, *inputs: Tensor) -> Tensor:
        n_cams = len(self.image_shapes)
        images, noise = inputs[:n_cams], inputs[n_cams]
        step_noise = inputs[n_cams + 1] if self.n_draws else None
        global_cond = self._global_cond(self.state_normalizer(state), images)
        sample = self.denoise(noise, global_cond, noise if step_noise is None else step_noise)
        start = self.n_obs_steps - 1
        return self.action_unnormalizer(sample[:, start : start + self.n_action_steps])
