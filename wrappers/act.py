"""Stateless inference core for LeRobot's ACT (Action Chunking Transformer).

Why this exists: ``ACTPolicy.select_action`` keeps an action queue (or a temporal
ensembler) between calls, ``forward`` is the training path, and normalization lives in
separate processor pipelines. None of that survives an export. This module re-expresses
ACT's inference path as one stateless function with normalization baked in, reusing the
policy's own submodules so the numbers are LeRobot's numbers.

It deliberately imports nothing but torch: the network object is passed in (duck-typed),
so a TorchScript/ONNX file built from it carries no dependency on LeRobot or on
policy-export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from lerobot.policies.act.modeling_act import ACT

from policy_export_wrappers.normalization import RANGE_STATS, SUPPORTED_NORM_MODES

IMAGE_FORMATS = ("float32", "uint8")


class FeatureNormalizer(nn.Module):
    """Normalize (or unnormalize) one feature exactly as LeRobot's processor step does.

    The operation order mirrors ``NormalizerProcessorStep._apply_transform`` term by term
    (including where the epsilon goes), because reordering even an add and a divide
    changes float32 results and would turn a bitwise-equal core into a merely close one.
    """

    #: Registered buffers (absent for IDENTITY): ``(x - offset) / scale`` or its inverse.
    offset: Tensor
    scale: Tensor

    def __init__(
        self,
        mode: str,
        stats: Mapping[str, Tensor] | None,
        *,
        inverse: bool,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if mode not in SUPPORTED_NORM_MODES:
            raise ValueError(f"unsupported normalization mode {mode!r}; expected one of {SUPPORTED_NORM_MODES}")
        self.mode = mode if stats else "IDENTITY"
        self.inverse = inverse
        f32 = torch.float32
        if self.mode == "MEAN_STD":
            assert stats is not None
            mean = torch.as_tensor(stats["mean"], dtype=f32)
            std = torch.as_tensor(stats["std"], dtype=f32)
            self.register_buffer("offset", mean)
            # Unnormalize multiplies by std (no eps); normalize divides by std + eps.
            self.register_buffer("scale", std if inverse else std + eps)
        elif self.mode in RANGE_STATS:
            assert stats is not None
            lo_key, hi_key = RANGE_STATS[self.mode]
            lo = torch.as_tensor(stats[lo_key], dtype=f32)
            hi = torch.as_tensor(stats[hi_key], dtype=f32)
            denom = hi - lo
            denom = torch.where(denom == 0, torch.tensor(eps, dtype=f32), denom)
            self.register_buffer("offset", lo)
            self.register_buffer("scale", denom)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "IDENTITY":
            return x
        if self.mode == "MEAN_STD":
            if self.inverse:
                return x * self.scale + self.offset
            return (x - self.offset) / self.scale
        if self.mode == "MIN_MAX":
            if self.inverse:
                return (x + 1) / 2 * self.scale + self.offset
            return 2 * (x - self.offset) / self.scale - 1
        # QUANTILES / QUANTILE10 spell the same affine map with float literals.
        if self.inverse:
            return (x + 1.0) * self.scale / 2.0 + self.offset
        return 2.0 * (x - self.offset) / self.scale - 1.0


class ACTCore(nn.Module):
    """``forward(state, *images) -> action_chunk`` for a trained ACT network.

    Inputs: ``state`` float32 ``[B, state_dim]`` in robot units; one image per camera in
    the policy's camera order, either float32 ``[B, 3, H, W]`` in [0, 1] or, with
    ``image_format="uint8"``, raw frames ``[B, H, W, 3]`` (converted in-graph the way
    LeRobot converts camera frames: ``float / 255`` then HWC -> CHW).
    Output: ``action_chunk`` float32 ``[B, chunk_size, action_dim]`` in robot units.

    Batch-size independence is the point: every tensor LeRobot allocates from the batch
    size (the zero latent, the zero decoder queries) is precomputed with a batch of one
    and broadcast with ``expand``, so exporters see a symbolic batch axis. The image-size
    dependent positional embeddings are precomputed for the image size given here, which
    fixes the image size of the exported graph (it is recorded in the artifact metadata).
    """

    latent_token: Tensor
    encoder_pos_embed: Tensor
    decoder_pos_embed: Tensor
    decoder_zeros: Tensor

    def __init__(
        self,
        act_model: ACT,
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
        if len(image_normalizers) != len(image_shapes):
            raise ValueError("one image normalizer per camera is required")
        if not image_shapes:
            raise ValueError("ACTCore needs at least one camera")
        cfg = act_model.config
        self.image_format = image_format
        self.uint8_images = image_format == "uint8"
        self.chunk_size = int(cfg.chunk_size)
        self.image_shapes = [tuple(int(d) for d in s) for s in image_shapes]

        self.backbone = act_model.backbone
        self.encoder_img_feat_input_proj = act_model.encoder_img_feat_input_proj
        self.encoder_robot_state_input_proj = act_model.encoder_robot_state_input_proj
        self.encoder = act_model.encoder
        self.decoder = act_model.decoder
        self.action_head = act_model.action_head
        self.state_normalizer = state_normalizer
        self.image_normalizers = nn.ModuleList(image_normalizers)
        self.action_unnormalizer = action_unnormalizer

        dim = int(cfg.dim_model)
        param = next(act_model.parameters())
        with torch.no_grad():
            # The latent is all zeros at inference, so its projection is a constant token.
            zero_latent = torch.zeros(1, int(cfg.latent_dim), dtype=torch.float32, device=param.device)
            latent_token = act_model.encoder_latent_input_proj(zero_latent)
            pos = list(act_model.encoder_1d_feature_pos_embed.weight.unsqueeze(1))
            for c, h, w in self.image_shapes:
                probe = torch.zeros(1, c, h, w, dtype=torch.float32, device=param.device)
                fmap = act_model.backbone(probe)["feature_map"]
                cam_pos = act_model.encoder_cam_feat_pos_embed(fmap).to(dtype=fmap.dtype)
                pos.extend(list(cam_pos.flatten(2).permute(2, 0, 1)))
            encoder_pos = torch.stack(pos, dim=0)
        self.register_buffer("latent_token", latent_token.unsqueeze(0).clone())  # [1, 1, D]
        self.register_buffer("encoder_pos_embed", encoder_pos.clone())  # [S, 1, D]
        self.register_buffer(
            "decoder_pos_embed", act_model.decoder_pos_embed.weight.detach().unsqueeze(1).clone()
        )  # [chunk, 1, D]
        self.register_buffer("decoder_zeros", torch.zeros(self.chunk_size, 1, dim, device=param.device))

    def _prepare_image(self, image: Tensor) -> Tensor:
        if self.uint8_images:
            image = (image.to(torch.float32) / 255).permute(0, 3, 1, 2)
        return image

    def forward(self, state: Tensor, *images: Tensor) -> Tensor:
        batch = state.shape[0]
        state = self.state_normalizer(state)
        tokens = [
            self.latent_token.expand(-1, batch, -1),
            self.encoder_robot_state_input_proj(state).unsqueeze(0),
        ]
        for image, normalizer in zip(images, self.image_normalizers, strict=True):
            image = normalizer(self._prepare_image(image))
            fmap = self.backbone(image)["feature_map"]
            feats = self.encoder_img_feat_input_proj(fmap)
            tokens.append(feats.flatten(2).permute(2, 0, 1))  # (h w) b c
        encoder_in = torch.cat(tokens, dim=0)
        encoder_out = self.encoder(encoder_in, pos_embed=self.encoder_pos_embed)
        decoder_out = self.decoder(
            self.decoder_zeros.expand(-1, batch, -1),
            encoder_out,
            encoder_pos_embed=self.encoder_pos_embed,
            decoder_pos_embed=self.decoder_pos_embed,
        )
        actions = self.action_head(decoder_out.transpose(0, 1))
        return self.action_unnormalizer(actions)
