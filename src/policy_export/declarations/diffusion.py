"""Diffusion Policy's declaration: history-axis observations, the initial noise and DDPM's per-step
draws as inputs; the host keeps the observation history and an action queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from policy_export.declarations.base import Declaration, Declared, FieldRule
from policy_export.errors import BadInputError
from policy_export.spec import ACTION_DIM, BATCH, HostDecl, PolicySpec, Role, TensorDecl, observation_inputs

SCHEDULERS = ("DDPM", "DDIM")
NOISE = "noise"
STEP_NOISE = "step_noise"


def _draws(cfg: Any) -> int:
    """How many fresh draws DDPM's loop makes (every step with t > 0), from the scheduler LeRobot builds."""
    if cfg.noise_scheduler_type != "DDPM":
        return 0
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler  # only when reading a checkpoint

    sched = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        clip_sample=cfg.clip_sample,
        clip_sample_range=cfg.clip_sample_range,
        prediction_type=cfg.prediction_type,
    )
    sched.set_timesteps(cfg.num_inference_steps or cfg.num_train_timesteps)
    return int((sched.timesteps > 0).sum())


class DiffusionDeclaration(Declaration):
    policy_type = "diffusion"
    fields: ClassVar[dict[str, FieldRule]] = {
        "horizon": FieldRule("int", lo=1, hi=1 << 16),
        "noise_scheduler_type": FieldRule("str", choices=SCHEDULERS),
        "num_inference_steps": FieldRule("int", lo=1, hi=100_000),
        "num_train_timesteps": FieldRule("int", lo=1, hi=100_000),
        "prediction_type": FieldRule("str", choices=("epsilon", "sample")),
        "crop_shape": FieldRule("int_list", optional=True, lo=1, hi=1 << 14, max_len=2),
    }

    def check_config(self, raw: dict[str, Any], config_path: Path) -> None:
        sched = raw.get("noise_scheduler_type", "DDPM")
        if sched not in SCHEDULERS:
            raise BadInputError(
                f"{config_path}: noise_scheduler_type {sched!r} is unknown; policy-export exports {', '.join(SCHEDULERS)}"
            )
        if any(k == "observation.environment_state" for k in raw.get("input_features") or {}):
            raise BadInputError(
                f"{config_path}: a diffusion policy with 'observation.environment_state' is not supported yet; "
                "export one trained on state and cameras only"
            )
        n_obs, horizon, n_act = raw.get("n_obs_steps", 2), raw.get("horizon", 64), raw.get("n_action_steps", 32)
        if all(isinstance(v, int) for v in (n_obs, horizon, n_act)) and n_act > horizon - n_obs + 1:
            raise BadInputError(
                f"{config_path}: n_action_steps {n_act} > horizon - n_obs_steps + 1 = {horizon - n_obs + 1}: "
                "the chunk would run past the predicted horizon; lower n_action_steps"
            )
        if raw.get("resize_shape") is not None:
            raise BadInputError(
                f"{config_path}: resize_shape is not supported yet; export a policy trained with crop_shape only"
            )

    def declare(self, cfg: Any, spec: PolicySpec, config_path: Path) -> Declared:
        horizon, n_obs = int(cfg.horizon), int(cfg.n_obs_steps)
        n_draws = _draws(cfg)
        inputs = [
            *observation_inputs(spec.state_dim, spec.cameras, spec.state_key, lead=("n_obs",)),
            TensorDecl(NOISE, Role.NOISE, (BATCH, "horizon", ACTION_DIM), units="standard normal"),
        ]
        if n_draws:
            inputs.append(
                TensorDecl(
                    STEP_NOISE, Role.STEP_NOISE, (BATCH, "n_draws", "horizon", ACTION_DIM), units="standard normal"
                )
            )
        steps = cfg.num_inference_steps or cfg.num_train_timesteps
        return Declared(
            chunk_size=int(cfg.n_action_steps),
            n_action_steps=int(cfg.n_action_steps),
            inputs=tuple(inputs),
            dims={"n_obs": n_obs, "horizon": horizon, **({"n_draws": n_draws} if n_draws else {})},
            host=HostDecl(history=n_obs),
            family={
                "horizon": horizon,
                "noise_scheduler_type": str(cfg.noise_scheduler_type),
                "num_inference_steps": int(steps),
                "num_train_timesteps": int(cfg.num_train_timesteps),
                "prediction_type": str(cfg.prediction_type),
                "crop_shape": None if cfg.crop_shape is None else [int(d) for d in cfg.crop_shape],
            },
        )

    def describe(self, spec: PolicySpec) -> list[tuple[str, str]]:
        f = spec.family
        return [
            ("horizon", str(f["horizon"])),
            ("scheduler", f"{f['noise_scheduler_type']}, {f['num_inference_steps']} steps ({f['prediction_type']})"),
            ("crop_shape", "off" if f.get("crop_shape") is None else "x".join(map(str, f["crop_shape"]))),
        ]
