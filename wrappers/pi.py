"""Stateless inference core for LeRobot's pi0 and pi0.5 (PaliGemma + a Gemma action expert), RTC in the graph.

One chunk prediction as a pure function, with SmolVLA's input conventions::

    forward(state, *images, lang_tokens, lang_mask, noise, rtc_prev_chunk, rtc_prev_len, rtc_delay)
        -> action_chunk

(see :mod:`policy_export_wrappers.smolvla` for the units of each input). The two models differ
only where LeRobot's ``PI0Pytorch`` and ``PI05Pytorch`` differ:

- **pi0** reads the normalized state as one token of the expert's suffix (``state_proj``), and
  conditions on time by concatenating the timestep embedding to every action token
  (``action_time_mlp_in/out``). The state token attends to the prefix and itself only, so its
  keys/values do not depend on the noisy actions: they are computed once, after the prefix,
  and appended to the prefix cache (LeRobot recomputes the same values at every step).
- **pi0.5** has no state input in the network: LeRobot's preprocessor writes the state,
  normalized and discretized into 256 bins, into the prompt (``Task: ..., State: ...;\\nAction: ``)
  before tokenizing, so here it arrives inside ``lang_tokens`` (the host does it; ``state`` is
  accepted and unused, so every VLA artifact has one signature). Time conditions the expert
  through adaRMS: ``silu(time_mlp_out(silu(time_mlp_in(sinusoid(t)))))`` feeds every expert
  RMSNorm's scale/shift/gate. That vector depends on the step only, so the caller computes the
  per-step table with LeRobot's own modules.

Shared: the image path (LeRobot's centered resize-with-pad, clamp, ``* 2 - 1``, SigLIP and the
linear projector), the PaliGemma prefix computed **once** with its post-RoPE key/value cache,
and the Euler loop as **one** loop (SmolVLA's :class:`~policy_export_wrappers.smolvla.FlowLoop`,
scripted around one traced expert step by :func:`~policy_export_wrappers.smolvla.script_for_export`),
with RTC guidance in closed form. Attention follows transformers' Gemma eager attention
(additive mask of LeRobot's ``-2.3819763e38``, float32 softmax); Gemma's rotary embedding and
LeRobot's (adaptive) RMSNorm modules are called as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy_export_wrappers.act import IMAGE_FORMATS, FeatureNormalizer
from policy_export_wrappers.smolvla import FlowLoop

#: LeRobot's ``prepare_attention_masks_4d`` value for masked positions (openpi's).
MASK_VALUE = -2.3819763e38
KINDS = ("pi0", "pi05")


def rope(inv_freq: Tensor, scaling: float, positions: Tensor) -> tuple[Tensor, Tensor]:
    """``GemmaRotaryEmbedding.forward``: ``(cos, sin)`` ``[B, L, D]`` for int positions ``[B, L]``."""
    inv = inv_freq[None, :, None].float().expand(positions.shape[0], -1, 1)
    freqs = (inv @ positions[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * scaling, emb.sin() * scaling


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``apply_rotary_pos_emb`` for ``x`` ``[B, H, L, D]`` (``unsqueeze_dim=1``)."""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos) + (rotated * sin)


def gemma_attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor, scaling: float) -> Tensor:
    """transformers' Gemma ``eager_attention_forward``: q ``[B, H, Lq, D]``, k/v ``[B, KVH, Lk, D]``,
    additive mask ``[B, 1, Lq, Lk]`` -> ``[B, Lq, H * D]``."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # repeat_kv
        key = key[:, :, None].expand(-1, -1, groups, -1, -1).flatten(1, 2)
        value = value[:, :, None].expand(-1, -1, groups, -1, -1).flatten(1, 2)
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    weights = weights + mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32)
    out = torch.matmul(weights, value).transpose(1, 2)
    return out.flatten(2, 3)


def additive(mask: Tensor) -> Tensor:
    """``prepare_attention_masks_4d``: bool ``[B, Lq, Lk]`` -> additive ``[B, 1, Lq, Lk]``."""
    return torch.where(mask[:, None], torch.tensor(0.0), torch.tensor(MASK_VALUE))


def resize_with_pad_centered(img: Tensor, height: int, width: int) -> Tensor:
    """LeRobot's ``resize_with_pad_torch`` for float CHW images (bilinear, clamp to [0, 1], zeros padded
    on both sides, the extra pixel at the bottom/right); sizes are Python ints fixed at export."""
    cur_h, cur_w = int(img.shape[2]), int(img.shape[3])
    ratio = max(cur_w / width, cur_h / height)
    rh, rw = int(cur_h / ratio), int(cur_w / ratio)
    out = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    pad_h0, rem_h = divmod(height - rh, 2)
    pad_w0, rem_w = divmod(width - rw, 2)
    return F.pad(out, (pad_w0, pad_w0 + rem_w, pad_h0, pad_h0 + rem_h), value=0.0)


class SiglipEncoder(nn.Module):
    """PaliGemma's SigLIP tower (no head) + ``multi_modal_projector``: ``get_image_features``'s
    ``pooler_output`` with transformers' modules, without its mask machinery (full images only)."""

    def __init__(self, vision_tower: Any, projector: Any) -> None:
        super().__init__()
        model = vision_tower.vision_model
        self.patch_embedding = model.embeddings.patch_embedding
        self.position_embedding = model.embeddings.position_embedding
        self.register_buffer("position_ids", model.embeddings.position_ids.clone())
        self.layers = model.encoder.layers
        self.post_layernorm = model.post_layernorm
        self.projector = projector
        attn = self.layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.scaling = float(attn.scale)

    def _attention(self, attn: Any, x: Tensor) -> Tensor:
        shape = (*x.shape[:-1], -1, self.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)
        k = attn.k_proj(x).view(shape).transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        w = torch.matmul(q, k.transpose(2, 3)) * self.scaling
        w = F.softmax(w, dim=-1, dtype=torch.float32)
        out = torch.matmul(w, v).transpose(1, 2)
        return attn.out_proj(out.flatten(2, 3))

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        x = x + self.position_embedding(self.position_ids)
        for layer in self.layers:
            x = x + self._attention(layer.self_attn, layer.layer_norm1(x))
            x = x + layer.mlp(layer.layer_norm2(x))
        return self.projector(self.post_layernorm(x))


class ExpertStack(nn.Module):
    """The Gemma action expert over suffix tokens, reading a key/value cache (``PiGemmaModel.forward``
    with ``past_key_values``): returns the final-normed hidden states and each layer's new keys/values.

    ``cond`` is pi0.5's adaRMS condition ``[1, W]`` (None for pi0: plain RMSNorm, plain residuals).
    """

    if TYPE_CHECKING:
        inv_freq: Tensor

    def __init__(self, expert_model: Any) -> None:
        super().__init__()
        self.layers = expert_model.layers
        self.norm = expert_model.norm
        self.register_buffer("inv_freq", expert_model.rotary_emb.inv_freq.clone(), persistent=False)
        self.rope_scaling = float(expert_model.rotary_emb.attention_scaling)
        attn = self.layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.scaling = float(attn.scaling)

    def forward(
        self, x: Tensor, cond: Tensor | None, keys: Tensor, values: Tensor, mask: Tensor, cos: Tensor, sin: Tensor
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            residual = x
            h, gate = layer.input_layernorm(x, cond)
            shape = (*h.shape[:-1], -1, self.head_dim)
            q = apply_rotary(layer.self_attn.q_proj(h).view(shape).transpose(1, 2), cos, sin)
            k = apply_rotary(layer.self_attn.k_proj(h).view(shape).transpose(1, 2), cos, sin)
            v = layer.self_attn.v_proj(h).view(shape).transpose(1, 2)
            new_k.append(k)
            new_v.append(v)
            k_all = torch.cat([keys[i], k], dim=2)
            v_all = torch.cat([values[i], v], dim=2)
            att = layer.self_attn.o_proj(gemma_attention(q, k_all, v_all, mask, self.scaling))
            x = residual + att if gate is None else residual + att * gate
            residual = x
            h, gate = layer.post_attention_layernorm(x, cond)
            h = layer.mlp(h)
            x = residual + h if gate is None else residual + h * gate
        out, _ = self.norm(x, cond)
        return out, new_k, new_v


class PiStep(nn.Module):
    """One velocity evaluation (``denoise_step``), with :class:`FlowLoop`'s step signature.

    ``time_emb`` ``[1, 1, E]`` is the step's table row: pi0's sinusoidal timestep embedding, or
    pi0.5's adaRMS condition. ``self_k``/``self_v`` ``[layers, B, KVH, P, D]``: the prefix cache
    (pi0: with the state token appended); ``self_mask`` the additive ``[B, 1, C, P + C]`` mask;
    ``self_cos``/``self_sin`` the action tokens' rotary tables. The ``cross_*`` arguments are
    SmolVLA's cross-attention inputs, which a Gemma expert does not have (passed, unused).
    """

    def __init__(self, model: Any, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.chunk = int(model.config.chunk_size)
        self.action_in_proj = model.action_in_proj
        self.action_out_proj = model.action_out_proj
        if kind == "pi0":
            self.action_time_mlp_in = model.action_time_mlp_in
            self.action_time_mlp_out = model.action_time_mlp_out
        self.expert = ExpertStack(model.paligemma_with_expert.gemma_expert.model)

    def forward(
        self,
        x_t: Tensor,
        time_emb: Tensor,
        self_k: Tensor,
        self_v: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        self_mask: Tensor,
        cross_mask: Tensor,
        self_cos: Tensor,
        self_sin: Tensor,
        cross_cos: Tensor,
        cross_sin: Tensor,
    ) -> Tensor:
        action_emb = self.action_in_proj(x_t)
        cond: Tensor | None = None
        if self.kind == "pi0":  # embed_suffix: [action, time] -> MLP (no activation after the second layer)
            time = time_emb.expand_as(action_emb)
            x = self.action_time_mlp_in(torch.cat([action_emb, time], dim=2))
            x = self.action_time_mlp_out(F.silu(x))
        else:  # pi0.5: the actions alone; time through adaRMS
            x = action_emb
            cond = time_emb.view(1, -1)
        out, _, _ = self.expert(x, cond, self_k, self_v, self_mask, self_cos, self_sin)
        return self.action_out_proj(out[:, -self.chunk :])


class PiCore(nn.Module):
    """``forward(state, *images, lang_tokens, lang_mask, noise, rtc_prev_chunk, rtc_prev_len, rtc_delay)``.

    ``time_table`` ``[num_steps, W]``: per step, pi0's timestep embedding or pi0.5's adaRMS
    condition; ``times``, ``guidance``, ``dt``, ``prefix_weights`` and ``execution_horizon`` as
    :class:`~policy_export_wrappers.smolvla.SmolVLACore`'s (LeRobot's own functions compute them).
    """

    if TYPE_CHECKING:
        prefix_weights: Tensor
        rows: Tensor
        vlm_inv_freq: Tensor

    def __init__(
        self,
        model: Any,
        *,
        kind: str,
        image_shapes: Sequence[Sequence[int]],
        state_normalizer: FeatureNormalizer,
        image_normalizers: Sequence[FeatureNormalizer],
        action_normalizer: FeatureNormalizer,
        action_unnormalizer: FeatureNormalizer,
        action_dim: int,
        time_table: Tensor,
        times: Sequence[float],
        guidance: Sequence[float],
        dt: float,
        prefix_weights: Tensor,
        execution_horizon: int,
        image_format: str = "float32",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        if len(image_normalizers) != len(image_shapes) or not image_shapes:
            raise ValueError("one image normalizer per camera, and at least one camera, are required")
        cfg = model.config
        pwe = model.paligemma_with_expert
        self.kind = kind
        self.uint8_images = image_format == "uint8"
        self.image_shapes = [tuple(int(d) for d in s) for s in image_shapes]
        self.resolution = (int(cfg.image_resolution[0]), int(cfg.image_resolution[1]))
        self.chunk = int(cfg.chunk_size)
        self.max_state_dim = int(cfg.max_state_dim)
        self.max_action_dim = int(cfg.max_action_dim)
        self.action_dim = int(action_dim)
        self.execution_horizon = int(execution_horizon)
        self.state_normalizer = state_normalizer
        self.image_normalizers = nn.ModuleList(image_normalizers)
        self.action_normalizer = action_normalizer
        self.action_unnormalizer = action_unnormalizer
        self.vision = SiglipEncoder(pwe.paligemma.model.vision_tower, pwe.paligemma.model.multi_modal_projector)
        language = pwe.paligemma.model.language_model
        self.embed_tokens = language.get_input_embeddings()
        self.vocab_size = int(self.embed_tokens.num_embeddings)
        self.vlm_layers = language.layers
        self.register_buffer("vlm_inv_freq", language.rotary_emb.inv_freq.clone(), persistent=False)
        self.vlm_rope_scaling = float(language.rotary_emb.attention_scaling)
        attn = self.vlm_layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.vlm_scaling = float(attn.scaling)
        if kind == "pi0":
            self.state_proj = model.state_proj
        self.register_buffer("prefix_weights", prefix_weights.to(torch.float32).reshape(-1, self.chunk).clone())
        self.register_buffer("rows", torch.arange(self.chunk, dtype=torch.long)[None, :])
        step = PiStep(model, kind)
        self.denoise: nn.Module = FlowLoop(step, time_table, times, guidance, dt)
        self.expert: ExpertStack = step.expert  # pi0's state token runs through the same expert once

    # ---- prefix -------------------------------------------------------------------------------
    def _image_tokens(self, images: Sequence[Tensor]) -> list[Tensor]:
        out = []
        height, width = self.resolution
        for image, normalizer, shape in zip(images, self.image_normalizers, self.image_shapes, strict=True):
            if self.uint8_images:
                image = (image.to(torch.float32) / 255).permute(0, 3, 1, 2)
            image = normalizer(image)
            if (shape[1], shape[2]) != (height, width):
                image = resize_with_pad_centered(image, height, width)
            out.append(self.vision(image * 2.0 - 1.0))
        return out

    def _prefix(
        self, images: Sequence[Tensor], lang_tokens: Tensor, lang_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``embed_prefix`` + the VLM's cache-filling forward: stacked post-RoPE keys and values
        ``[layers, B, KVH, P, D]`` and the prefix padding mask ``[B, P]``."""
        img = self._image_tokens(images)
        # Ids clamped into the vocabulary: valid ids are unchanged; a warm-up with random int64 data cannot fail.
        lang = self.embed_tokens(lang_tokens.clamp(0, self.vocab_size - 1))
        x = torch.cat([*img, lang], dim=1)
        ones = torch.ones_like(x[:, :, 0], dtype=torch.bool)
        n_img = sum(int(e.shape[1]) for e in img)
        pad = torch.cat([ones[:, :n_img], lang_mask.to(torch.bool)], dim=1)
        # make_att_2d_masks with every att_mask 0: valid tokens see every valid token.
        mask = additive(pad[:, None, :] & pad[:, :, None])
        positions = torch.cumsum(pad.to(torch.long), dim=1) - 1
        cos, sin = rope(self.vlm_inv_freq, self.vlm_rope_scaling, positions)
        keys, values = [], []
        last = len(self.vlm_layers) - 1
        for i, layer in enumerate(self.vlm_layers):
            residual = x
            h, _ = layer.input_layernorm(x)
            shape = (*h.shape[:-1], -1, self.head_dim)
            q = apply_rotary(layer.self_attn.q_proj(h).view(shape).transpose(1, 2), cos, sin)
            k = apply_rotary(layer.self_attn.k_proj(h).view(shape).transpose(1, 2), cos, sin)
            v = layer.self_attn.v_proj(h).view(shape).transpose(1, 2)
            keys.append(k)
            values.append(v)
            if i == last:  # the last layer's output feeds nothing the expert reads
                break
            x = residual + layer.self_attn.o_proj(gemma_attention(q, k, v, mask, self.vlm_scaling))
            residual = x
            h, _ = layer.post_attention_layernorm(x)
            x = residual + layer.mlp(h)
        return torch.stack(keys), torch.stack(values), pad

    def _state_token(self, state: Tensor, keys: Tensor, values: Tensor, pad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """pi0: the state token's keys/values at every expert layer (it sees the prefix and itself),
        appended to the cache; the padding mask grows by one valid column."""
        state = F.pad(self.state_normalizer(state), (0, self.max_state_dim - state.shape[-1]))
        x = self.state_proj(state)[:, None, :]
        offsets = pad.to(torch.long).sum(dim=-1)[:, None]
        cos, sin = rope(self.expert.inv_freq, self.expert.rope_scaling, offsets)
        valid = torch.cat([pad, torch.ones_like(pad[:, :1])], dim=1)[:, None, :]
        _, new_k, new_v = self.expert(x, None, keys, values, additive(valid), cos, sin)
        keys = torch.cat([keys, torch.stack(new_k)], dim=3)
        values = torch.cat([values, torch.stack(new_v)], dim=3)
        return keys, values, valid[:, 0]

    # ---- RTC ----------------------------------------------------------------------------------
    def _rtc(self, prev_chunk: Tensor, prev_len: Tensor, delay: Tensor) -> tuple[Tensor, Tensor]:
        """LeRobot's normalized, zero-padded leftover ``[B, C, A_max]`` and prefix weights ``[B, C, 1]``
        (as :class:`~policy_export_wrappers.smolvla.SmolVLACore`)."""
        real = self.rows < prev_len[:, None]
        prev = torch.where(real[:, :, None], self.action_normalizer(prev_chunk), torch.zeros_like(prev_chunk))
        prev = F.pad(prev, (0, self.max_action_dim - prev.shape[-1]))
        end = torch.clamp(prev_len, min=0, max=self.execution_horizon)
        start = torch.clamp(delay, min=0, max=self.chunk)
        weights = self.prefix_weights.index_select(0, end * (self.chunk + 1) + start)
        return prev, weights[:, :, None]

    def forward(self, state: Tensor, *inputs: Tensor) -> Tensor:
        n_cams = len(self.image_shapes)
        images = inputs[:n_cams]
        lang_tokens, lang_mask, noise, prev_chunk, prev_len, delay = inputs[n_cams:]
        keys, values, pad = self._prefix(images, lang_tokens, lang_mask)
        # Positions of the action tokens: after the valid prefix (pi0: and after the state token).
        offsets = pad.to(torch.long).sum(dim=-1)[:, None]
        if self.kind == "pi0":
            keys, values, pad = self._state_token(state, keys, values, pad)
            offsets = offsets + 1
        prev, weights = self._rtc(prev_chunk, prev_len, delay)
        # denoise_step's mask: the actions see the valid prefix and each other (one block).
        seen = pad[:, None, :].expand(-1, self.chunk, -1)
        mask = additive(torch.cat([seen, torch.ones_like(seen[:, :, :1]).expand(-1, -1, self.chunk)], dim=2))
        cos, sin = rope(self.expert.inv_freq, self.expert.rope_scaling, offsets + self.rows)
        x = self.denoise(noise, prev, weights, keys, values, keys, values, mask, mask, cos, sin, cos, sin)
        out = self.action_unnormalizer(x[:, :, : self.action_dim])
        if self.kind == "pi05":
            # pi0.5's network never reads the state (it is in the prompt): an exporter would drop the
            # unused input. This term is exactly zero whatever the state holds (NaN included), and keeps it.
            out = out + torch.where(torch.isfinite(state[:, :1, None]), 0.0, 0.0)
        return out
