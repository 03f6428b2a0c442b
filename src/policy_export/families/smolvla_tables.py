"""SmolVLA's per-model constants, computed with LeRobot's and transformers' own functions.

The core (``policy_export_wrappers.smolvla``) imports nothing but torch; everything that
LeRobot computes per call but that does not depend on the observation (timestep embeddings,
RTC guidance weights and prefix weights, SigLIP's patch positions) is computed here once, by
calling LeRobot's code or its exact expressions, and handed to the core as tables. That is
how the core stays equal to LeRobot rather than close to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: LeRobot's RTCConfig defaults, used when a checkpoint saved none (LeRobot's rollout then
#: takes its RTC settings from the command line, whose defaults these are).
RTC_DEFAULTS: dict[str, Any] = {
    "execution_horizon": 10,
    "max_guidance_weight": 10.0,
    "prefix_attention_schedule": "LINEAR",
}


@dataclass(frozen=True)
class RTCSettings:
    """The RTC settings baked into an export (recorded in its metadata)."""

    execution_horizon: int
    max_guidance_weight: float
    prefix_attention_schedule: str
    #: "checkpoint" (its ``rtc_config``) or "lerobot-defaults" (it saved none).
    source: str

    @classmethod
    def of(cls, cfg: Any) -> RTCSettings:
        rtc = getattr(cfg, "rtc_config", None)
        if rtc is None:
            d = RTC_DEFAULTS
            return cls(
                int(d["execution_horizon"]),
                float(d["max_guidance_weight"]),
                str(d["prefix_attention_schedule"]),
                "lerobot-defaults",
            )
        schedule = rtc.prefix_attention_schedule
        return cls(
            int(rtc.execution_horizon),
            float(rtc.max_guidance_weight),
            str(getattr(schedule, "value", schedule)),
            "checkpoint",
        )

    def lerobot_config(self) -> Any:
        """LeRobot's ``RTCConfig`` for these settings (enabled)."""
        from lerobot.configs import RTCAttentionSchedule
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        return RTCConfig(
            enabled=True,
            execution_horizon=self.execution_horizon,
            max_guidance_weight=self.max_guidance_weight,
            prefix_attention_schedule=RTCAttentionSchedule(self.prefix_attention_schedule),
        )


def flow_schedule(num_steps: int) -> tuple[list[float], float]:
    """``euler_integrate``'s times ``1.0 + step * dt`` and ``dt = -1 / num_steps`` (Python floats, as there)."""
    dt = -1.0 / num_steps
    return [1.0 + step * dt for step in range(num_steps)], dt


def time_embeddings(model: Any, num_steps: int) -> torch.Tensor:
    """``embed_suffix``'s timestep embedding per step ``[num_steps, E]``: LeRobot's own
    ``create_sinusoidal_pos_embedding`` on the float32 time tensor it builds, then cast to float32."""
    import torch
    from lerobot.policies.common.vla_utils import create_sinusoidal_pos_embedding

    times, _ = flow_schedule(num_steps)
    rows = []
    for t in times:
        time_tensor = torch.tensor(t, dtype=torch.float32).expand(1)
        emb = create_sinusoidal_pos_embedding(
            time_tensor,
            model.vlm_with_expert.expert_hidden_size,
            model.config.min_period,
            model.config.max_period,
            device=torch.device("cpu"),
        )
        rows.append(emb.type(dtype=torch.float32))
    return torch.cat(rows)


def guidance_weights(num_steps: int, max_guidance_weight: float) -> list[float]:
    """``RTCProcessor.denoise_step``'s clipped guidance weight at each step, with its float32 expressions."""
    import torch

    times, _ = flow_schedule(num_steps)
    out = []
    for time in times:
        tau = 1 - time
        max_w = torch.as_tensor(max_guidance_weight)
        tau_tensor = torch.as_tensor(tau)
        squared_one_minus_tau = (1 - tau_tensor) ** 2
        inv_r2 = (squared_one_minus_tau + tau_tensor**2) / (squared_one_minus_tau)
        # LeRobot passes the 0-d float32 tensor as posinf; its float is the same float32 value.
        c = torch.nan_to_num((1 - tau_tensor) / tau_tensor, posinf=float(max_w))
        weight = torch.nan_to_num(c * inv_r2, posinf=float(max_w))
        out.append(float(torch.minimum(weight, max_w)))
    return out


def prefix_weight_table(rtc: RTCSettings, chunk_size: int) -> torch.Tensor:
    """LeRobot's ``get_prefix_weights(start, end, chunk_size)`` for every end (the execution horizon
    clipped to the leftover's length) and start (the inference delay) in 0..chunk_size, at
    ``[end, start]``: the core looks its row up per robot instead of re-deriving the schedule."""
    import torch
    from lerobot.policies.rtc.modeling_rtc import RTCProcessor

    processor = RTCProcessor(rtc.lerobot_config())
    table = torch.zeros(chunk_size + 1, chunk_size + 1, chunk_size)
    for end in range(chunk_size + 1):
        for start in range(chunk_size + 1):
            table[end, start] = processor.get_prefix_weights(start, end, chunk_size)
    return table


def vision_position_ids(vision_model: Any, height: int, width: int) -> torch.Tensor:
    """SigLIP's patch position ids for a full ``height`` x ``width`` image (no padded patches):
    ``SmolVLMVisionEmbeddings.forward``'s bucketize expressions, run once."""
    import torch

    emb = vision_model.embeddings
    patch = int(emb.patch_size)
    n_h, n_w = height // patch, width // patch
    mask = torch.ones(1, n_h, n_w, dtype=torch.bool)
    boundaries = torch.arange(1 / emb.num_patches_per_side, 1.0, 1 / emb.num_patches_per_side)
    step_h = 1.0 / mask[:, :, 0].sum(dim=1)
    step_w = 1.0 / mask[:, 0, :].sum(dim=1)
    h_idx = torch.arange(n_h, dtype=torch.float32)
    w_idx = torch.arange(n_w, dtype=torch.float32)
    frac_h = torch.clamp(h_idx[None, :] * step_h[:, None], max=(1.0 - 1e-6)).to(torch.float32)
    frac_w = torch.clamp(w_idx[None, :] * step_w[:, None], max=(1.0 - 1e-6)).to(torch.float32)
    bucket_h = torch.bucketize(frac_h, boundaries, right=True)
    bucket_w = torch.bucketize(frac_w, boundaries, right=True)
    return (bucket_h[:, :, None] * emb.num_patches_per_side + bucket_w[:, None, :]).reshape(-1)


def export_image_size(cfg: Any, camera_shapes: list[tuple[int, int, int]]) -> tuple[int, int]:
    """The (height, width) the vision tower sees: ``resize_imgs_with_padding`` (stored as width,
    height), or the cameras' own size when it is off (then all cameras must share it)."""
    resize = cfg.resize_imgs_with_padding
    if resize is not None:
        return int(resize[1]), int(resize[0])
    sizes = {tuple(s[1:]) for s in camera_shapes}
    if len(sizes) != 1:
        raise ValueError(
            f"resize_imgs_with_padding is off and the cameras' sizes differ ({sorted(sizes)}); "
            "LeRobot's vision tower needs one size: train with resize_imgs_with_padding"
        )
    h, w = sizes.pop()
    return int(h), int(w)


def check_image_size(vlm_config: Any, height: int, width: int) -> None:
    """SmolVLM's connector shuffles a square grid of patches by ``scale_factor``: other sizes are refused."""
    patch = int(vlm_config.vision_config.patch_size)
    scale = int(vlm_config.scale_factor)
    if height != width or height % (patch * scale):
        raise ValueError(
            f"images of {height}x{width} are not supported: SmolVLM needs square images whose side is a multiple "
            f"of patch_size x scale_factor = {patch * scale}; set resize_imgs_with_padding to such a size"
        )


def build_core(
    policy: Any,
    *,
    camera_shapes: list[tuple[int, int, int]],
    state_normalizer: Any,
    image_normalizers: list[Any],
    action_normalizer: Any,
    action_unnormalizer: Any,
    image_format: str = "float32",
) -> Any:
    """The eval-mode :class:`~policy_export_wrappers.smolvla.SmolVLACore` of a loaded ``SmolVLAPolicy``."""
    from policy_export_wrappers.smolvla import SmolVLACore

    cfg = policy.config
    model = policy.model
    rtc = RTCSettings.of(cfg)
    times, dt = flow_schedule(int(cfg.num_steps))
    vlm = model.vlm_with_expert
    height, width = export_image_size(cfg, camera_shapes)
    check_image_size(vlm.config, height, width)
    core = SmolVLACore(
        model,
        image_shapes=camera_shapes,
        state_normalizer=state_normalizer,
        image_normalizers=image_normalizers,
        action_normalizer=action_normalizer,
        action_unnormalizer=action_unnormalizer,
        action_dim=int(cfg.action_feature.shape[0]),
        vision_position_ids=vision_position_ids(vlm.get_vlm_model().vision_model, height, width),
        time_embeds=time_embeddings(model, int(cfg.num_steps)),
        times=times,
        guidance=guidance_weights(int(cfg.num_steps), rtc.max_guidance_weight),
        dt=dt,
        prefix_weights=prefix_weight_table(rtc, int(cfg.chunk_size)),
        execution_horizon=rtc.execution_horizon,
        image_format=image_format,
    )
    return core.eval()
