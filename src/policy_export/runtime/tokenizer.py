"""The task string -> ``lang_tokens`` / ``lang_mask``, on the robot, with the ``tokenizers`` library only.

A vision-language-action core (SmolVLA) takes the instruction as token ids. LeRobot tokenizes
it in its preprocessor with ``transformers``' ``AutoTokenizer`` (``TokenizerProcessorStep``),
which would drag transformers and torch onto the robot. The tokenizer itself is a Rust
``tokenizers.Tokenizer``; ``transformers`` only adds the text conventions around it. This
module reproduces exactly what SmolVLA's preprocessor does
(``lerobot/policies/smolvla/processor_smolvla.py``, LeRobot 0.6.1):

1. ``NewLineTaskProcessorStep``: the task gets a trailing ``"\\n"`` unless it has one;
2. ``TokenizerProcessorStep(padding=config.pad_language_to, padding_side="right",
   max_length=config.tokenizer_max_length, truncation=True)``: the backend tokenizer's
   ``encode`` with special tokens (the post-processor transformers configured), then right
   padding with the pad token to the longest task of the batch (``"longest"``, SmolVLA's
   default) or to ``max_length`` (``"max_length"``); the mask is True on real tokens.

pi0 builds the same text (task + ``"\n"``). pi0.5's preprocessor writes a prompt instead
(``Pi05PrepareStateTokenizerProcessorStep``): ``Task: <task>, State: <bins>;\nAction: `` with the task
cleaned (stripped, ``_`` and newlines as spaces) and the state normalized as its preprocessor does,
then discretized into 256 bins over [-1, 1]; the artifact's ``prompt`` settings
(:class:`PromptSettings`) carry the template and that normalization, so the robot needs no LeRobot.
Such prompts are cached by their text (a robot holding still re-uses them).

One deliberate difference: a task longer than ``tokenizer_max_length`` tokens is refused
(:class:`~policy_export.errors.BadInputError`, one line) where LeRobot silently cuts it, since a
cut instruction is a different instruction.

The tokenizer file is the *resolved* backend tokenizer (``AutoTokenizer.from_pretrained(vlm)
.backend_tokenizer`` with padding and truncation off), written beside the artifact by the
toolchain (:func:`policy_export.language.write_tokenizer_json`): a ``tokenizer.json`` copied from
a VLM folder would miss the post-processor transformers adds from ``tokenizer_config.json``.
Token ids are cached per task string, so a robot repeating one instruction tokenizes it once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.errors import BadInputError, UnavailableError

#: ``pad_language_to`` values LeRobot's SmolVLA config takes.
PADDINGS = ("longest", "max_length")
#: Distinct task strings kept tokenized (a robot uses a handful; the bound keeps a chatty caller from growing it).
CACHE_SIZE = 256
#: The suffix of the tokenizer file written beside an artifact (``policy.onnx`` -> ``policy.onnx.tokenizer.json``).
SIDECAR_SUFFIX = ".tokenizer.json"


#: The state normalizations a prompt may apply (LeRobot's ``NormalizerProcessorStep`` modes).
STATE_MODES = ("IDENTITY", "MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10")


@dataclass(frozen=True)
class PromptSettings:
    """How the task becomes the text that is tokenized: ``task + "\n"`` (SmolVLA, pi0: the default), or a
    template with ``{task}`` and ``{state}`` (pi0.5: the state normalized with ``offset``/``scale`` as
    LeRobot's normalizer does, then ``np.digitize`` into ``state_bins`` bins over [-1, 1], minus one)."""

    newline: bool = True
    template: str | None = None
    state_bins: int = 256
    state_mode: str = "IDENTITY"
    state_offset: tuple[float, ...] = ()
    state_scale: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PromptSettings:
        if not d:
            return cls()
        state = d.get("state") or {}
        out = cls(
            newline=bool(d.get("newline", True)),
            template=None if d.get("template") is None else str(d["template"]),
            state_bins=int(d.get("state_bins", 256)),
            state_mode=str(state.get("mode", "IDENTITY")),
            state_offset=tuple(float(v) for v in state.get("offset", ())),
            state_scale=tuple(float(v) for v in state.get("scale", ())),
        )
        if out.template is not None and "{task}" not in out.template:
            raise BadInputError("the model's prompt template has no {task}; re-export the artifact")
        if out.state_mode not in STATE_MODES or len(out.state_offset) != len(out.state_scale) or out.state_bins < 1:
            raise BadInputError("the model's prompt state settings are malformed; re-export the artifact")
        return out

    def to_dict(self) -> dict[str, Any]:
        if self.template is None:
            return {"newline": self.newline}
        return {
            "newline": self.newline,
            "template": self.template,
            "state_bins": self.state_bins,
            "state": {"mode": self.state_mode, "offset": list(self.state_offset), "scale": list(self.state_scale)},
        }

    @property
    def needs_state(self) -> bool:
        return self.template is not None and "{state}" in self.template

    def state_text(self, state: np.ndarray) -> str:
        """The state's bins as LeRobot writes them (``" ".join`` of ints), from one robot's raw state."""
        x: np.ndarray = np.asarray(state, np.float32).reshape(-1)
        if len(self.state_offset) != x.shape[0]:
            raise BadInputError(
                f"state has {x.shape[0]} values, the model's prompt normalizes {len(self.state_offset)}"
            )
        offset = np.asarray(self.state_offset, np.float32)
        scale = np.asarray(self.state_scale, np.float32)
        if self.state_mode == "MEAN_STD":
            x = (x - offset) / scale
        elif self.state_mode != "IDENTITY":  # LeRobot's range maps: 2 (x - lo) / (hi - lo) - 1, float32
            x = 2.0 * (x - offset) / scale - 1.0
        bins = np.digitize(x, bins=np.linspace(-1, 1, self.state_bins + 1)[:-1]) - 1
        return " ".join(str(int(b)) for b in bins)

    def text(self, task: str, state: np.ndarray | None = None) -> str:
        if self.template is None:
            return task if (task.endswith("\n") or not self.newline) else task + "\n"
        cleaned = task.strip().replace("_", " ").replace("\n", " ")
        fields = {"task": cleaned, "state": "" if state is None else self.state_text(state)}
        return self.template.format(**fields)


@dataclass(frozen=True)
class TokenizerSettings:
    """How the task is tokenized: read from the artifact's metadata, never retyped.

    ``length``: the token axis the core was exported with when it is fixed (then every batch
    is padded to it), None when it is dynamic (then ``padding`` decides, as in LeRobot).
    ``sha256``: of the tokenizer file the artifact was exported with (checked on load).
    """

    max_length: int
    pad_token_id: int
    padding: str = "longest"
    length: int | None = None
    sha256: str | None = None
    prompt: PromptSettings = PromptSettings()

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise BadInputError(f"pad_language_to {self.padding!r} is not supported; use one of {', '.join(PADDINGS)}")
        if self.max_length < 1:
            raise BadInputError(f"tokenizer_max_length must be >= 1, got {self.max_length}")
        if self.length is not None and self.length < self.max_length and self.padding == "max_length":
            raise BadInputError(
                f"the core's token axis {self.length} is shorter than tokenizer_max_length {self.max_length}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TokenizerSettings:
        """From the model's host declaration (``spec.host.tokenizer``): ``max_length``, ``pad_token_id``,
        ``padding``, ``length``, ``sha256`` (:func:`policy_export.language.tokenizer_fields` writes them)."""
        if not d:
            raise BadInputError("this model takes no language input (no tokenizer in its metadata); drop task=")
        try:
            length = d.get("length")
            return cls(
                max_length=int(d["max_length"]),
                pad_token_id=int(d["pad_token_id"]),
                padding=str(d.get("padding") or "longest"),
                length=None if length is None else int(length),
                sha256=d.get("sha256"),
                prompt=PromptSettings.from_dict(d.get("prompt")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadInputError(
                f"the model's tokenizer metadata is incomplete or malformed ({exc}); re-export the artifact"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "pad_token_id": self.pad_token_id,
            "padding": self.padding,
            "length": self.length,
            "sha256": self.sha256,
            "prompt": self.prompt.to_dict(),
        }


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_backend(path: Path) -> Any:  # tokenizers.Tokenizer (untyped extension module)
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UnavailableError(
            "the 'tokenizers' package is not installed: pip install tokenizers (no torch or transformers needed)"
        ) from None
    if not path.is_file():
        raise BadInputError(
            f"{path}: no tokenizer file; it is written beside the artifact at export "
            f"(<artifact>{SIDECAR_SUFFIX}): copy it along, or pass tokenizer=<file>"
        )
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path}: not a readable tokenizer.json ({first}); re-export the artifact") from None


class TaskTokenizer:
    """LeRobot SmolVLA's task tokenization with the ``tokenizers`` library, cached per task."""

    def __init__(self, backend: Any, settings: TokenizerSettings, source: str = "tokenizer") -> None:
        self.backend = backend
        self.settings = settings
        self.source = source
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        #: Tasks tokenized (cache misses): how often the robot paid for tokenization.
        self.encoded = 0

    @classmethod
    def from_file(cls, path: str | Path, settings: TokenizerSettings) -> TaskTokenizer:
        """A resolved tokenizer.json; refused when its sha256 differs from the one the artifact recorded."""
        path = Path(path)
        backend = _load_backend(path)
        if settings.sha256 and sha256_file(path) != settings.sha256:
            raise BadInputError(
                f"{path}: not the tokenizer the model was exported with (sha256 differs); "
                f"use the {SIDECAR_SUFFIX} file written beside this artifact"
            )
        return cls(backend, settings, str(path))

    @classmethod
    def for_artifact(
        cls, artifact: str | Path, settings: TokenizerSettings, tokenizer: str | Path | None = None
    ) -> TaskTokenizer:
        """The tokenizer beside ``artifact`` (or the file ``tokenizer`` names, e.g. on a Triton client's host)."""
        path = Path(tokenizer) if tokenizer is not None else Path(str(artifact) + SIDECAR_SUFFIX)
        return cls.from_file(path, settings)

    def ids(self, task: object, state: np.ndarray | None = None) -> np.ndarray:
        """Token ids of one task (int64, unpadded), as LeRobot's processor computes them; ``state``: this
        robot's raw state, for a prompt that carries it (pi0.5)."""
        if not isinstance(task, str):
            raise BadInputError(
                f"task must be a string (the language instruction, e.g. task='pick up the cube'), "
                f"got {type(task).__name__}"
            )
        text = self.settings.prompt.text(task, state)
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        ids = np.asarray(self.backend.encode(text, add_special_tokens=True).ids, dtype=np.int64)
        limit = self.settings.max_length
        if len(ids) > limit:
            shown = task if len(task) <= 40 else task[:37] + "..."
            what = "its prompt" if self.settings.prompt.template is not None else "it"
            raise BadInputError(
                f"task {shown!r}: {what} is {len(ids)} tokens, longer than the model's tokenizer_max_length {limit}: "
                f"shorten it (LeRobot would silently cut it to its first {limit} tokens)"
            )
        ids.setflags(write=False)
        self.encoded += 1
        self._cache[text] = ids
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return ids

    def __call__(
        self, task: str | Sequence[str], batch_size: int = 1, state: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(lang_tokens int64 [B, L], lang_mask bool [B, L])`` for one task shared by ``batch_size``
        robots, or one task per robot (a sequence of ``batch_size`` strings). ``state`` ``[B, state_dim]``
        (raw): needed when the model's prompt carries the state (pi0.5), ignored otherwise."""
        tasks = list(task) if isinstance(task, list | tuple) else [task] * batch_size
        if len(tasks) != batch_size:
            raise BadInputError(f"{len(tasks)} tasks for {batch_size} robots: give one task, or one per robot")
        if not self.settings.prompt.needs_state:
            rows = [self.ids(t) for t in tasks]
        elif state is None or np.shape(state)[0] != batch_size:
            raise BadInputError(
                "this model writes the robot's state into its prompt: tokenize with state=[B, state_dim]"
            )
        else:
            rows = [self.ids(t, np.asarray(state)[i]) for i, t in enumerate(tasks)]
        s = self.settings
        if s.length is not None:
            length = s.length
        elif s.padding == "max_length":
            length = s.max_length
        else:
            length = max(len(r) for r in rows)
        if any(len(r) > length for r in rows):
            raise BadInputError(
                f"a task of {max(len(r) for r in rows)} tokens does not fit the core's token axis of {length}"
            )
        tokens = np.full((batch_size, length), s.pad_token_id, np.int64)
        mask = np.zeros((batch_size, length), bool)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
            mask[i, : len(r)] = True
        return tokens, mask
