"""The robot-side task tokenizer (``tokenizers`` only) against LeRobot's own SmolVLA preprocessor.

The reference is ``make_smolvla_pre_post_processors`` itself (newline step + transformers'
``AutoTokenizer`` with SmolVLA's padding settings) on a SmolVLM-style tokenizer folder built
here (byte-level BPE with SmolVLM's special tokens; no download). The host side loads only
the resolved ``tokenizer.json`` the toolchain writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policy_export.errors import BadInputError
from policy_export.runtime.tokenizer import TaskTokenizer, TokenizerSettings

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>", "<end_of_utterance>",
           "<global-img>"]  # fmt: skip
CORPUS = [
    "pick up the red cube and place it in the box",
    "open the drawer",
    "fold the towel neatly",
    "Stack the blocks: blue on green, then red.",
    "déplace le cube vers la boîte",
]
TASKS = [
    "pick up the red cube",
    "open the drawer\n",  # already ends with a newline: not doubled
    "",  # the empty task is "\n"
    "Fold the TOWEL, then stack 3 blocks!",
    "déplace le cube ➜ boîte",  # non-ASCII: byte-level pieces
    "two\nlines",
]
MAX_LENGTH = 24


def build_vlm_tokenizer(folder: Path, bos_template: bool = False) -> Path:
    """A SmolVLM-style tokenizer folder (what ``vlm_model_name`` points at), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    if bos_template:  # a post-processor that adds a BOS: the host must reproduce it too
        tok.post_processor = processors.TemplateProcessing(
            single="<|im_start|> $A", special_tokens=[("<|im_start|>", tok.token_to_id("<|im_start|>"))]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "end_of_utterance_token": "<end_of_utterance>",
            "global_image_token": "<global-img>",
        },
    )
    fast.save_pretrained(folder)
    return folder


def lerobot_tokens(vlm: Path, tasks: list[str], padding: str, max_length: int = MAX_LENGTH):
    """LeRobot's SmolVLA preprocessor on a batch of tasks: (tokens, mask) as numpy."""
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    cfg = SmolVLAConfig(
        vlm_model_name=str(vlm),
        load_vlm_weights=False,
        tokenizer_max_length=max_length,
        pad_language_to=padding,
        device="cpu",
        input_features={"observation.state": PolicyFeature(FeatureType.STATE, (3,))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (2,))},
    )
    pre, _ = make_smolvla_pre_post_processors(cfg, dataset_stats=None)
    out = pre({"observation.state": torch.zeros(len(tasks), 3), "task": list(tasks)})
    return (
        out["observation.language.tokens"].numpy(),
        out["observation.language.attention_mask"].numpy(),
        cfg,
    )


def host_tokenizer(vlm: Path, tmp: Path, padding: str, max_length: int = MAX_LENGTH, cfg=None) -> TaskTokenizer:
    """What the export writes (resolved tokenizer + settings) and what the robot loads from it."""
    from policy_export.language import load_vlm_tokenizer, tokenizer_fields, write_tokenizer_json

    tok = load_vlm_tokenizer(vlm)
    sha = write_tokenizer_json(tok, tmp / "policy.onnx.tokenizer.json")

    class Cfg:
        vlm_model_name, tokenizer_max_length, pad_language_to = str(vlm), max_length, padding

    fields = tokenizer_fields(cfg or Cfg, tok, sha256=sha)
    return TaskTokenizer.for_artifact(tmp / "policy.onnx", TokenizerSettings.from_dict(json.loads(json.dumps(fields))))


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> Path:
    return build_vlm_tokenizer(tmp_path_factory.mktemp("vlm") / "SmolVLM-toy")


@pytest.fixture(scope="module")
def vlm_bos(tmp_path_factory) -> Path:
    return build_vlm_tokenizer(tmp_path_factory.mktemp("vlm_bos") / "SmolVLM-toy-bos", bos_template=True)


@pytest.fixture(scope="module")
def vlm_demo(tmp_path_factory) -> Path:
    """The VLM folder the project's SmolVLA checkpoints point at (config, processor and tokenizer)."""
    from policy_export.demo_smolvla import TINY_SMOLVLA, build_vlm_folder

    return build_vlm_folder(tmp_path_factory.mktemp("vlm_demo") / "SmolVLM-demo", TINY_SMOLVLA.vlm)


@pytest.mark.parametrize("padding", ["longest", "max_length"])
@pytest.mark.parametrize("folder", ["vlm", "vlm_bos", "vlm_demo"])
def test_host_tokens_equal_lerobot_smolvla_preprocessor(folder, padding, request, tmp_path):
    vlm = request.getfixturevalue(folder)
    host = host_tokenizer(vlm, tmp_path, padding)
    # One task at a time (what a robot sends) and the whole mixed batch (padding to the longest).
    for batch in [[t] for t in TASKS] + [TASKS]:
        ref_tokens, ref_mask, _ = lerobot_tokens(vlm, batch, padding)
        tokens, mask = host(batch, batch_size=len(batch))
        assert tokens.dtype == np.int64 and mask.dtype == np.bool_
        np.testing.assert_array_equal(tokens, ref_tokens, err_msg=repr(batch))
        np.testing.assert_array_equal(mask, ref_mask, err_msg=repr(batch))
    if folder == "vlm_bos":
        assert host.ids("open the drawer")[0] == host.backend.token_to_id("<|im_start|>")


def test_one_task_for_a_batch_of_robots_and_a_task_of_exactly_max_length(vlm, tmp_path):
    host = host_tokenizer(vlm, tmp_path, "longest")
    tokens, mask = host("pick up the red cube", batch_size=3)
    assert tokens.shape[0] == 3 and (tokens == tokens[0]).all() and mask.all()
    # The longest task that fits: LeRobot keeps it whole, so do we.
    words = "cube " * 60
    fit = next(
        words[:n] for n in range(len(words), 0, -1) if len(host.backend.encode(words[:n] + "\n").ids) == MAX_LENGTH
    )
    ref_tokens, _, _ = lerobot_tokens(vlm, [fit], "max_length")
    tokens, mask = host_tokenizer(vlm, tmp_path / "..", "max_length")(fit)
    np.testing.assert_array_equal(tokens, ref_tokens)
    assert mask.all() and tokens.shape == (1, MAX_LENGTH)


def test_a_task_longer_than_tokenizer_max_length_is_one_line_where_lerobot_cuts_it(vlm, tmp_path):
    host = host_tokenizer(vlm, tmp_path, "max_length")
    task = "pick up the red cube and place it in the box " * 4
    ref_tokens, ref_mask, _ = lerobot_tokens(vlm, [task], "max_length")
    assert ref_mask.all() and ref_tokens.shape == (1, MAX_LENGTH)  # LeRobot silently keeps the first 24 tokens
    with pytest.raises(BadInputError) as err:
        host(task)
    msg = str(err.value)
    assert "\n" not in msg and f"longer than the model's tokenizer_max_length {MAX_LENGTH}" in msg and "shorten" in msg


def test_tokenization_is_cached_per_task(vlm, tmp_path):
    host = host_tokenizer(vlm, tmp_path, "longest")
    for _ in range(50):
        host("open the drawer")
        host(["open the drawer", "fold the towel"], batch_size=2)
    assert host.encoded == 2


@pytest.mark.parametrize(
    ("task", "message"),
    [(None, "task must be a string"), (3, "task must be a string"), (["a", "b", "c"], "3 tasks for 2 robots")],
)
def test_bad_tasks_are_one_line(vlm, tmp_path, task, message):
    host = host_tokenizer(vlm, tmp_path, "longest")
    with pytest.raises(BadInputError, match=message):
        host(task, batch_size=2)


def test_missing_or_foreign_tokenizer_file_is_one_line(vlm, tmp_path):
    host_tokenizer(vlm, tmp_path, "longest")
    settings = TokenizerSettings(max_length=MAX_LENGTH, pad_token_id=2, sha256="0" * 64)
    with pytest.raises(BadInputError, match="no tokenizer file"):
        TaskTokenizer.for_artifact(tmp_path / "other.onnx", settings)
    with pytest.raises(BadInputError, match="not the tokenizer the model was exported with"):
        TaskTokenizer.for_artifact(tmp_path / "policy.onnx", settings)
    (tmp_path / "bad.onnx.tokenizer.json").write_text("{not json")
    with pytest.raises(BadInputError, match=r"not a readable tokenizer\.json"):
        TaskTokenizer.for_artifact(tmp_path / "bad.onnx", TokenizerSettings(MAX_LENGTH, 2))


def test_the_sidecar_written_at_export_is_what_the_robot_loads(vlm, tmp_path):
    from policy_export import language
    from policy_export.runtime import tokenizer

    assert language.SIDECAR_SUFFIX == tokenizer.SIDECAR_SUFFIX
    tok = language.load_vlm_tokenizer(vlm)

    class Cfg:
        vlm_model_name, tokenizer_max_length, pad_language_to = str(vlm), MAX_LENGTH, "longest"

    fields = language.tokenizer_fields(Cfg, tok)  # sha256 of the resolved tokenizer, before any file exists
    path = language.write_tokenizer_sidecar(tmp_path / "m.onnx", vlm, fields["sha256"])
    assert path.name == "m.onnx.tokenizer.json"
    host = TaskTokenizer.for_artifact(tmp_path / "m.onnx", TokenizerSettings.from_dict(fields))  # sha256 checked
    ref_tokens, _, _ = lerobot_tokens(vlm, ["fold the towel"], "longest")
    np.testing.assert_array_equal(host("fold the towel")[0], ref_tokens)
    with pytest.raises(BadInputError, match="tokenizer changed"):
        language.write_tokenizer_sidecar(tmp_path / "n.onnx", vlm, "0" * 64)


def test_missing_vlm_folder_names_vlm_model_name(tmp_path):
    from policy_export.language import load_vlm_tokenizer

    with pytest.raises(BadInputError, match=r"vlm_model_name .*no such folder") as err:
        load_vlm_tokenizer(tmp_path / "HuggingFaceTB" / "SmolVLM2-500M-Video-Instruct")
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match=r"no tokenizer\.json"):
        load_vlm_tokenizer(tmp_path / "empty")


def test_the_host_tokenizer_imports_neither_torch_nor_transformers(vlm, tmp_path):
    host_tokenizer(vlm, tmp_path, "longest")
    code = (
        "import sys; from policy_export.runtime.tokenizer import TaskTokenizer, TokenizerSettings\n"
        f"t = TaskTokenizer.for_artifact({str(tmp_path / 'policy.onnx')!r}, TokenizerSettings(24, 2))\n"
        "tokens, mask = t('open the drawer')\n"
        "assert mask.all() and tokens.shape[1] > 1\n"
        "bad = [m for m in ('torch', 'transformers', 'lerobot') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
