"""Stateless inference core for LeRobot's SmolVLA, with real-time chunking (RTC) inside the graph.

Why this exists: ``SmolVLAPolicy.predict_action_chunk`` tokenizes the task in a processor,
keeps an action queue, samples noise, and runs RTC guidance through ``torch.autograd``. None
of that exports. This module is one chunk prediction as a pure function::

    forward(state, *images, lang_tokens, lang_mask, noise, rtc_prev_chunk, rtc_prev_len, rtc_delay)
        -> action_chunk

- ``state`` float32 ``[B, state_dim]`` and ``rtc_prev_chunk`` float32 ``[B, chunk, action_dim]``
  are in robot units; the output ``action_chunk`` ``[B, chunk, action_dim]`` too.
- one image per camera, float32 ``[B, 3, H, W]`` in [0, 1] (uint8 ``[B, H, W, 3]`` artifacts:
  converted in the graph); LeRobot's resize-with-pad (left/top padding) happens inside.
- ``lang_tokens`` int64 ``[B, L]`` and ``lang_mask`` bool ``[B, L]``: the task tokenized on the host
  (right-padded, ``L <= tokenizer_max_length``); padding tokens change nothing.
- ``noise`` float32 ``[B, chunk, max_action_dim]``: LeRobot's ``noise=`` argument.
- ``rtc_prev_len`` int64 ``[B]``: how many leading rows of ``rtc_prev_chunk`` are real (LeRobot's
  ``prev_chunk_left_over`` is ``rtc_prev_chunk[b, :rtc_prev_len[b]]``); 0 is LeRobot's ``None``
  (no guidance). ``rtc_delay`` int64 ``[B]``: LeRobot's ``inference_delay``. Both per robot.

Inside, in LeRobot's order: normalization, the SigLIP vision encoder and connector, the VLM
prefix computed **once** with its key/value cache kept, then the flow-matching Euler loop as
**one** loop (:class:`FlowLoop`, a TorchScript ``prim::Loop`` / ONNX ``Loop`` around one traced
action-expert step reading that cache; :func:`script_for_export`), then unnormalization.

RTC in closed form: LeRobot's ``RTCProcessor.denoise_step`` computes ``v_t`` *before* ``x_t``
requires grad, so ``autograd.grad(x_t - time * v_t, x_t, err)`` is ``err`` itself, and its guided
velocity is ``v_t - w_step * (prev - (x_t - time * v_t)) * weights`` with ``prev`` the normalized,
zero-padded leftover, ``weights`` LeRobot's prefix weights for (inference delay, execution
horizon clipped to the leftover's length) and ``w_step`` its clipped guidance weight. With
``rtc_prev_len = 0`` the weights are all zero and the velocity is ``v_t`` unchanged.

Per-step constants (timestep embeddings, RTC guidance weights, the prefix-weight table) are
computed by the caller with LeRobot's own functions and passed in, so this module imports
nothing but torch; LeRobot's modules are duck-typed. Op order follows LeRobot's term by term
(see comments): float32 results change with reordering, and this core is meant to be equal.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy_export_wrappers.act import IMAGE_FORMATS, FeatureNormalizer

ATTENTION_MODES = ("cross_attn", "self_attn")
#: ``apply_rope``'s default in LeRobot's smolvlm_with_expert (not the VLM config's rope_theta).
ROPE_MAX_WAVELENGTH = 10_000


def rope_timescale(head_dim: int) -> Tensor:
    """``apply_rope``'s timescale, with its float32 expressions (a constant per model)."""
    d_half = head_dim // 2
    freq_exponents = (2.0 / head_dim) * torch.arange(d_half, dtype=torch.float32)
    return ROPE_MAX_WAVELENGTH**freq_exponents


def rope_tables(positions: Tensor, timescale: Tensor) -> tuple[Tensor, Tensor]:
    """``(cos, sin)`` ``[B, L, 1, D/2]`` of ``apply_rope`` for int positions ``[B, L]``."""
    radians = positions[..., None].to(torch.float32) / timescale[None, None, :]
    radians = radians[..., None, :]
    return torch.cos(radians), torch.sin(radians)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``apply_rope`` (x ``[B, L, H, D]``) given its tables; same products and differences."""
    d_half = x.shape[-1] // 2
    x1, x2 = x.split(d_half, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def eager_attention(
    mask: Tensor, query: Tensor, key: Tensor, value: Tensor, num_heads: int, num_kv_heads: int, head_dim: int
) -> Tensor:
    """``SmolVLMWithExpertModel.eager_attention_forward``: ``[B, Lq, H, D]`` x ``[B, Lk, KVH, D]``
    with a bool mask ``[B, Lq, Lk]`` -> ``[B, Lq, H * D]``. Shapes come from the tensors (``-1``),
    never from Python ints of the batch or length, so the batch and token axes stay symbolic."""
    groups = num_heads // num_kv_heads
    # [B, Lk, KVH, D] -> [B, Lk, KVH, groups, D] -> [B, Lk, H, D], as expand + reshape there.
    key = key[:, :, :, None, :].expand(-1, -1, -1, groups, -1).flatten(2, 3)
    value = value[:, :, :, None, :].expand(-1, -1, -1, groups, -1).flatten(2, 3)
    query = query.transpose(1, 2)
    key = key.transpose(1, 2)
    att_weights = torch.matmul(query, key.transpose(2, 3))
    att_weights = att_weights * head_dim**-0.5
    big_neg = torch.finfo(torch.float32).min
    masked = torch.where(mask[:, None, :, :], att_weights, torch.tensor(big_neg, dtype=torch.float32))
    probs = F.softmax(masked, dim=-1)
    out = torch.matmul(probs, value.permute(0, 2, 1, 3))
    return out.permute(0, 2, 1, 3).flatten(2, 3)


def resize_with_pad(img: Tensor, height: int, width: int) -> Tensor:
    """LeRobot's ``resize_with_pad`` (bilinear, no antialias, zeros padded on the left and top)
    for a fixed input size: the sizes are Python ints decided at export, as there."""
    cur_h, cur_w = img.shape[2], img.shape[3]
    if cur_h == height and cur_w == width:
        return img
    ratio = max(cur_w / width, cur_h / height)
    rh, rw = int(cur_h / ratio), int(cur_w / ratio)
    resized = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False)
    return F.pad(resized, (max(0, width - rw), 0, max(0, height - rh), 0), value=0.0)


class VisionEncoder(nn.Module):
    """SmolVLM's SigLIP tower + connector (``SmolVLMWithExpertModel.embed_image``) on full images.

    transformers' own forward builds a bidirectional attention mask that the tracing exporter
    cannot follow (``sdpa_mask`` receives a 0-d length) and computes patch positions with
    ``bucketize`` per call. Images here always have the export's size and no padded patches, so
    the positions are a constant (computed by the caller with transformers' own code) and
    the attention needs no mask. Same modules, same products.
    """

    if TYPE_CHECKING:
        position_ids: Tensor

    def __init__(self, vision_model: Any, connector: Any, position_ids: Tensor, scale_factor: int) -> None:
        super().__init__()
        self.patch_embedding = vision_model.embeddings.patch_embedding
        self.position_embedding = vision_model.embeddings.position_embedding
        self.layers = vision_model.encoder.layers
        self.post_layernorm = vision_model.post_layernorm
        self.proj = connector.modality_projection.proj
        self.register_buffer("position_ids", position_ids.reshape(1, -1).clone())
        self.grid = math.isqrt(int(position_ids.numel()))
        self.scale = int(scale_factor)
        attn = self.layers[0].self_attn
        self.num_heads = int(attn.num_heads)
        self.head_dim = int(attn.head_dim)
        self.scaling = float(attn.scale)

    def _attention(self, attn: Any, x: Tensor) -> Tensor:
        shape = (*x.shape[:-1], -1, self.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)
        k = attn.k_proj(x).view(shape).transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        w = torch.matmul(q, k.transpose(-1, -2)) * self.scaling
        w = F.softmax(w, dim=-1, dtype=torch.float32)
        out = torch.matmul(w, v).transpose(1, 2)
        return attn.out_proj(out.flatten(2, 3))

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        x = x + self.position_embedding(self.position_ids)
        for layer in self.layers:
            x = x + self._attention(layer.self_attn, layer.layer_norm1(x))
            x = x + layer.mlp(layer.layer_norm2(x))
        x = self.post_layernorm(x)
        # SmolVLMConnector.pixel_shuffle with the grid known at export (batch axis left free).
        g, s, d = self.grid, self.scale, x.shape[-1]
        x = x.reshape(-1, g, g // s, d * s)
        x = x.permute(0, 2, 1, 3)
        x = x.reshape(-1, g // s, g // s, d * s * s)
        x = x.permute(0, 2, 1, 3)
        x = x.reshape(-1, (g // s) * (g // s), d * s * s)
        return self.proj(x)


def expert_layout(
    num_vlm_layers: int, num_expert_layers: int, attention_mode: str, self_attn_every_n: int
) -> list[tuple[int | None, bool]]:
    """Per VLM layer: (index of its action-expert layer or None, whether the expert self-attends).

    ``get_model_layers`` / ``forward`` of ``SmolVLMWithExpertModel``: with fewer expert layers,
    VLM layer i has expert layer i // k when i % k == 0 (k = VLM / expert layers); a layer is a
    self-attention layer when the mode is not cross-attention or i % self_attn_every_n == 0.
    A layout LeRobot itself cannot run (a self-attention layer without an expert layer, whose
    ``torch.cat`` of nothing fails there) is a ``ValueError``.
    """
    if attention_mode not in ATTENTION_MODES:
        raise ValueError(f"attention_mode {attention_mode!r} is not supported; use one of {', '.join(ATTENTION_MODES)}")
    if num_expert_layers <= 0 or num_vlm_layers % num_expert_layers:
        raise ValueError(
            f"num_expert_layers {num_expert_layers} must divide num_vlm_layers {num_vlm_layers} (LeRobot asserts it)"
        )
    multiple = num_vlm_layers // num_expert_layers
    layout: list[tuple[int | None, bool]] = []
    for i in range(num_vlm_layers):
        expert = None if (i > 0 and i % multiple != 0) else i // multiple
        self_attn = "cross" not in attention_mode or (self_attn_every_n > 0 and i % self_attn_every_n == 0)
        if self_attn and expert is None:
            raise ValueError(
                f"expert layout not supported: VLM layer {i} self-attends but has no expert layer "
                f"(num_expert_layers {num_expert_layers}, self_attn_every_n_layers {self_attn_every_n}); "
                "LeRobot cannot run it either"
            )
        layout.append((expert, self_attn))
    return layout


class ExpertStep(nn.Module):
    """One velocity evaluation: ``VLAFlowMatching.denoise_step`` reading the prefix cache.

    Inputs are tensors only (it is traced once and called from the scripted loop):
    ``x_t`` ``[B, C, A_max]``, the step's timestep embedding ``[1, 1, E]``, the self-attention
    layers' prefix keys/values ``[n_self, B, P, KVH, D]`` (post-RoPE, LeRobot's cache), the
    cross-attention layers' expert-projected prefix keys/values ``[n_cross, B, P, KVH, D]``
    (LeRobot projects them every step; they do not change, so they are projected once
    outside the loop), the masks and the RoPE tables of both kinds of layers.
    """

    def __init__(self, model: Any, layout: Sequence[tuple[int | None, bool]]) -> None:
        super().__init__()
        vwe = model.vlm_with_expert
        text = vwe.config.text_config
        self.num_heads = int(text.num_attention_heads)
        self.num_kv_heads = int(text.num_key_value_heads)
        self.head_dim = int(text.head_dim)
        self.chunk = int(model.config.chunk_size)
        self.action_in_proj = model.action_in_proj
        self.action_time_mlp_in = model.action_time_mlp_in
        self.action_time_mlp_out = model.action_time_mlp_out
        self.action_out_proj = model.action_out_proj
        self.expert_layers = vwe.lm_expert.layers
        self.norm = vwe.lm_expert.norm
        self.layout = [(e, s) for e, s in layout]

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
        # embed_suffix: the time embedding is the same for every robot at a step.
        action_emb = self.action_in_proj(x_t)
        time_emb = time_emb.expand_as(action_emb)
        x = self.action_time_mlp_in(torch.cat([action_emb, time_emb], dim=2))
        x = F.silu(x)
        x = self.action_time_mlp_out(x)
        n_self = n_cross = 0
        for expert_index, self_attn in self.layout:
            if expert_index is None:  # no expert layer at this VLM layer: the suffix passes through
                continue
            layer = self.expert_layers[expert_index]
            h = layer.input_layernorm(x)
            shape = (*h.shape[:-1], -1, self.head_dim)
            q = layer.self_attn.q_proj(h).view(shape)
            if self_attn:  # forward_attn_layer: suffix K/V appended to the cached prefix K/V
                k = layer.self_attn.k_proj(h).view(shape)
                v = layer.self_attn.v_proj(h).view(shape)
                q = apply_rope(q, self_cos, self_sin)
                k = apply_rope(k, self_cos, self_sin)
                keys = torch.cat([self_k[n_self], k], dim=1)
                values = torch.cat([self_v[n_self], v], dim=1)
                att = eager_attention(self_mask, q, keys, values, self.num_heads, self.num_kv_heads, self.head_dim)
                n_self += 1
            else:  # forward_cross_attn_layer: attends to the (expert-projected) prefix only
                q = apply_rope(q, cross_cos, cross_sin)
                att = eager_attention(
                    cross_mask, q, cross_k[n_cross], cross_v[n_cross], self.num_heads, self.num_kv_heads, self.head_dim
                )
                n_cross += 1
            out = layer.self_attn.o_proj(att) + x
            residual = out
            out = layer.post_attention_layernorm(out)
            out = layer.mlp(out)
            x = out + residual
        x = self.norm(x)
        return self.action_out_proj(x[:, -self.chunk :])


class FlowLoop(nn.Module):
    """The Euler loop (``euler_integrate``) with RTC guidance, over per-step tables.

    ``for i in range(self.times.shape[0])`` (a count read from a tensor, not a Python int) is
    what :func:`script_for_export` keeps as one TorchScript ``prim::Loop`` (an ONNX ``Loop``
    whose trip count is the step count) around one traced :class:`ExpertStep`; the ONNX
    exporter would unroll a constant-count loop. Step i's arithmetic is LeRobot's:
    ``x1 = x_t - time * v_t``, ``v = v_t - w_i * ((prev - x1) * weights)``, ``x_t = x_t + dt * v``.
    """

    if TYPE_CHECKING:
        time_embeds: Tensor
        times: Tensor
        guidance: Tensor
        dt: Tensor

    def __init__(
        self, step: nn.Module, time_embeds: Tensor, times: Sequence[float], guidance: Sequence[float], dt: float
    ) -> None:
        super().__init__()
        self.step = step
        self.register_buffer("time_embeds", time_embeds.to(torch.float32).clone())  # [n_steps, E]
        self.register_buffer("times", torch.tensor(list(times), dtype=torch.float32))
        self.register_buffer("guidance", torch.tensor(list(guidance), dtype=torch.float32))
        self.register_buffer("dt", torch.tensor(dt, dtype=torch.float32))

    def forward(
        self,
        noise: Tensor,
        prev: Tensor,
        weights: Tensor,
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
        x_t = noise
        for i in range(self.times.shape[0]):
            v_t = self.step(
                x_t,
                self.time_embeds[i].view(1, 1, -1),
                self_k,
                self_v,
                cross_k,
                cross_v,
                self_mask,
                cross_mask,
                self_cos,
                self_sin,
                cross_cos,
                cross_sin,
            )
            # RTCProcessor.denoise_step, closed form (see the module docstring).
            x1_t = x_t - self.times[i] * v_t
            err = (prev - x1_t) * weights
            v_t = v_t - self.guidance[i] * err
            x_t = x_t + self.dt * v_t
        return x_t


class SmolVLACore(nn.Module):
    """``forward(state, *images, lang_tokens, lang_mask, noise, rtc_prev_chunk, rtc_prev_len, rtc_delay)``.

    See the module docstring for the signature. ``time_embeds`` ``[n_steps, E]``, ``times``,
    ``guidance`` (per step) and ``prefix_weights`` ``[C + 1, C + 1, C]`` (LeRobot's
    ``get_prefix_weights(start, end, C)`` at ``[end, start]``) come from LeRobot's own
    functions (the family module computes them); ``execution_horizon`` is the RTC config's.
    """

    if TYPE_CHECKING:
        prefix_weights: Tensor
        timescale: Tensor
        cross_positions: Tensor

    def __init__(
        self,
        model: Any,
        *,
        image_shapes: Sequence[Sequence[int]],
        state_normalizer: FeatureNormalizer,
        image_normalizers: Sequence[FeatureNormalizer],
        action_normalizer: FeatureNormalizer,
        action_unnormalizer: FeatureNormalizer,
        action_dim: int,
        vision_position_ids: Tensor,
        time_embeds: Tensor,
        times: Sequence[float],
        guidance: Sequence[float],
        dt: float,
        prefix_weights: Tensor,
        execution_horizon: int,
        image_format: str = "float32",
    ) -> None:
        super().__init__()
        cfg = model.config
        check_supported(cfg)
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        if len(image_normalizers) != len(image_shapes) or not image_shapes:
            raise ValueError("one image normalizer per camera, and at least one camera, are required")
        vwe = model.vlm_with_expert
        vlm = vwe.get_vlm_model()
        self.uint8_images = image_format == "uint8"
        self.image_shapes = [tuple(int(d) for d in s) for s in image_shapes]
        resize = cfg.resize_imgs_with_padding
        # SmolVLA stores (width, height); LeRobot resizes to height = [1], width = [0].
        self.resize: tuple[int, int] | None = None if resize is None else (int(resize[1]), int(resize[0]))
        self.chunk = int(cfg.chunk_size)
        self.max_state_dim = int(cfg.max_state_dim)
        self.max_action_dim = int(cfg.max_action_dim)
        self.action_dim = int(action_dim)
        self.execution_horizon = int(execution_horizon)
        self.state_normalizer = state_normalizer
        self.image_normalizers = nn.ModuleList(image_normalizers)
        self.action_normalizer = action_normalizer
        self.action_unnormalizer = action_unnormalizer
        self.vision = VisionEncoder(vlm.vision_model, vlm.connector, vision_position_ids, vwe.config.scale_factor)
        self.embed_tokens = vlm.text_model.get_input_embeddings()
        self.vocab_size = int(self.embed_tokens.num_embeddings)
        self.state_proj = model.state_proj
        self.text_layers = vlm.text_model.layers
        text = vwe.config.text_config
        self.num_heads = int(text.num_attention_heads)
        self.num_kv_heads = int(text.num_key_value_heads)
        self.head_dim = int(text.head_dim)
        self.layout = expert_layout(
            len(self.text_layers),
            int(vwe.num_expert_layers),
            str(cfg.attention_mode),
            int(cfg.self_attn_every_n_layers),
        )
        self.expert_layers = vwe.lm_expert.layers
        self.register_buffer("timescale", rope_timescale(self.head_dim))
        self.register_buffer("prefix_weights", prefix_weights.to(torch.float32).reshape(-1, self.chunk).clone())
        self.register_buffer("cross_positions", torch.arange(self.chunk, dtype=torch.long)[None, :])
        self.denoise: nn.Module = FlowLoop(ExpertStep(model, self.layout), time_embeds, times, guidance, dt)

    # ---- prefix -------------------------------------------------------------------------------
    def _image_tokens(self, images: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for image, normalizer in zip(images, self.image_normalizers, strict=True):
            if self.uint8_images:
                image = (image.to(torch.float32) / 255).permute(0, 3, 1, 2)
            image = normalizer(image)
            if self.resize is not None:
                image = resize_with_pad(image, self.resize[0], self.resize[1])
            image = image * 2.0 - 1.0
            emb = self.vision(image)
            # embed_prefix: scaled by sqrt(dim) as a float32 tensor.
            emb = emb * torch.tensor(float(emb.shape[-1]) ** 0.5, dtype=torch.float32)
            out.append(emb)
        return out

    def _prefix(
        self, state: Tensor, images: Sequence[Tensor], lang_tokens: Tensor, lang_mask: Tensor
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """``embed_prefix`` + the VLM's cache-filling forward: per layer the post-RoPE prefix K/V
        ``[B, P, KVH, D]``, and the prefix padding mask ``[B, P]``."""
        img_embs = self._image_tokens(images)
        # Ids are clamped into the vocabulary: valid ids (all the host's tokenizer makes) are unchanged,
        # and a server's warm-up with random int64 data cannot make the embedding lookup fail.
        lang = self.embed_tokens(lang_tokens.clamp(0, self.vocab_size - 1))
        lang = lang * math.sqrt(lang.shape[-1])
        state = F.pad(self.state_normalizer(state), (0, self.max_state_dim - state.shape[-1]))
        state_emb = self.state_proj(state)[:, None, :]
        x = torch.cat([*img_embs, lang, state_emb], dim=1)
        ones = torch.ones_like(x[:, :, 0], dtype=torch.bool)  # [B, P]
        n_img = sum(int(e.shape[1]) for e in img_embs)
        pad = torch.cat([ones[:, :n_img], lang_mask.to(torch.bool), ones[:, :1]], dim=1)
        # make_att_2d_masks with att_masks 0 for images and language, 1 for the state token:
        # nothing but the state attends to the state; the state attends to everything.
        is_state = torch.zeros_like(pad)
        is_state[:, -1] = True
        att = ~is_state[:, None, :] | is_state[:, :, None]
        mask = att & (pad[:, None, :] & pad[:, :, None])
        positions = torch.cumsum(pad.to(torch.long), dim=1) - 1
        cos, sin = rope_tables(positions, self.timescale)
        keys, values = [], []
        last = len(self.text_layers) - 1
        for i, layer in enumerate(self.text_layers):
            h = layer.input_layernorm(x)
            shape = (*h.shape[:-1], -1, self.head_dim)
            q = apply_rope(layer.self_attn.q_proj(h).view(shape), cos, sin)
            k = apply_rope(layer.self_attn.k_proj(h).view(shape), cos, sin)
            v = layer.self_attn.v_proj(h).view(shape)
            keys.append(k)
            values.append(v)
            if i == last:  # the last layer's output feeds nothing the expert reads
                break
            att_out = eager_attention(mask, q, k, v, self.num_heads, self.num_kv_heads, self.head_dim)
            out = layer.self_attn.o_proj(att_out) + x
            residual = out
            out = layer.mlp(layer.post_attention_layernorm(out))
            x = out + residual
        return keys, values, pad

    # ---- RTC ----------------------------------------------------------------------------------
    def _rtc(self, prev_chunk: Tensor, prev_len: Tensor, delay: Tensor) -> tuple[Tensor, Tensor]:
        """LeRobot's normalized, zero-padded leftover ``[B, C, A_max]`` and prefix weights ``[B, C, 1]``."""
        rows = self.cross_positions  # [1, C]: 0 .. C-1
        real = rows < prev_len[:, None]
        prev = torch.where(real[:, :, None], self.action_normalizer(prev_chunk), torch.zeros_like(prev_chunk))
        prev = F.pad(prev, (0, self.max_action_dim - prev.shape[-1]))
        # execution_horizon is clipped to the leftover's length; the delay to [0, C] (get_prefix_weights
        # clips it to the horizon itself).
        end = torch.clamp(prev_len, min=0, max=self.execution_horizon)
        start = torch.clamp(delay, min=0, max=self.chunk)
        weights = self.prefix_weights.index_select(0, end * (self.chunk + 1) + start)
        return prev, weights[:, :, None]

    def forward(self, state: Tensor, *inputs: Tensor) -> Tensor:
        n_cams = len(self.image_shapes)
        images = inputs[:n_cams]
        lang_tokens, lang_mask, noise, prev_chunk, prev_len, delay = inputs[n_cams:]
        keys, values, pad = self._prefix(state, images, lang_tokens, lang_mask)
        prev, weights = self._rtc(prev_chunk, prev_len, delay)
        self_k, self_v, cross_k, cross_v = [], [], [], []
        for i, (expert_index, self_attn) in enumerate(self.layout):
            if expert_index is None:
                continue
            if self_attn:
                self_k.append(keys[i])
                self_v.append(values[i])
            else:  # forward_cross_attn_layer's k_proj / v_proj of the cached prefix K/V
                attn = self.expert_layers[expert_index].self_attn
                k, v = keys[i].flatten(2, 3), values[i].flatten(2, 3)
                cross_k.append(attn.k_proj(k).view(*k.shape[:-1], -1, self.head_dim))
                cross_v.append(attn.v_proj(v).view(*v.shape[:-1], -1, self.head_dim))
        if not cross_k:  # self-attention only: the loop still takes (unused) tensors of the right rank
            cross_k, cross_v = self_k[:1], self_v[:1]
        if not self_k:
            self_k, self_v = cross_k[:1], cross_v[:1]
        # denoise_step's masks: the suffix sees the valid prefix, and itself causally.
        prefix_2d = pad[:, None, :].expand(-1, self.chunk, -1)
        causal = self.cross_positions[:, None, :] <= self.cross_positions[:, :, None]  # [1, C, C]
        causal = causal.expand(pad.shape[0], -1, -1)
        self_mask = torch.cat([prefix_2d, causal], dim=2)
        # Positions: after the valid prefix for self-attention, from 0 for cross-attention.
        offsets = pad.to(torch.long).sum(dim=-1)[:, None]
        self_cos, self_sin = rope_tables(offsets + self.cross_positions, self.timescale)
        cross_cos, cross_sin = rope_tables(self.cross_positions, self.timescale)
        x = self.denoise(
            noise,
            prev,
            weights,
            torch.stack(self_k),
            torch.stack(self_v),
            torch.stack(cross_k),
            torch.stack(cross_v),
            self_mask,
            prefix_2d,
            self_cos,
            self_sin,
            cross_cos,
            cross_sin,
        )
        return self.action_unnormalizer(x[:, :, : self.action_dim])


def check_supported(cfg: Any) -> None:
    """Refuse (``ValueError``, one line) the SmolVLA settings this core does not reproduce."""
    if str(cfg.attention_mode) not in ATTENTION_MODES:
        raise ValueError(
            f"attention_mode {cfg.attention_mode!r} is not supported; use one of {', '.join(ATTENTION_MODES)}"
        )
    if not cfg.use_cache:
        raise ValueError("use_cache false is not supported (LeRobot's SmolVLA cannot sample without its cache either)")
    if cfg.empty_cameras:
        raise ValueError("empty_cameras is not supported; export a policy whose cameras are all real inputs")
    if cfg.add_image_special_tokens:
        raise ValueError("add_image_special_tokens is not supported yet; export a policy trained without it")
    if cfg.adapt_to_pi_aloha or cfg.use_delta_joint_actions_aloha:
        raise ValueError("adapt_to_pi_aloha is not supported; export a policy trained without the Aloha conversion")
    if int(cfg.prefix_length) > 0:
        raise ValueError("prefix_length > 0 is not supported; export a policy with prefix_length -1")


def script_for_export(core: SmolVLACore, example: Sequence[Tensor]) -> SmolVLACore:
    """``core`` with its Euler loop as TorchScript (one traced :class:`ExpertStep` in a scripted loop),
    so the tracing exporters keep the loop as ``prim::Loop`` instead of unrolling it.

    ``example`` is the core's positional inputs, used only for the step's trace (the batch and
    token axes stay symbolic: the step takes its shapes from its tensors)."""
    loop = core.denoise
    assert isinstance(loop, FlowLoop), "script_for_export takes an unscripted core"
    captured: list[tuple[Tensor, ...]] = []

    def grab(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        if not captured:
            captured.append(tuple(a.detach() for a in args))

    handle = loop.step.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            core(*example)
    finally:
        handle.remove()
    traced_step = torch.jit.trace(loop.step, captured[0], check_trace=False)
    return _replaced(core, denoise=torch.jit.script(_replaced(loop, step=traced_step)))


def _replaced(module: nn.Module, **children: nn.Module) -> Any:
    """A shallow copy of ``module`` with some children swapped; ``module`` itself is untouched."""
    out = copy.copy(module)
    out._modules = dict(module._modules)
    for name, child in children.items():
        setattr(out, name, child)
    return out
