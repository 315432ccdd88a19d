"""GGUF export, verified number for number: transformers reads the file (``gguf_file=``, its own GGUF reader,
independent of edulm's writer) and gives the safetensors export's logits and token ids."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import add_checkpoint, tiny_model

from edulm.cli import main
from edulm.config import Config, ModelConfig, RunConfig, TokenizerConfig, save_config
from edulm.base.errors import UsageError
from edulm.hf import export
from edulm.hf.gguf_export import GGUF_DTYPES, export_gguf

TOLERANCE = {"f32": 1e-5, "f16": 2e-3, "bf16": 1e-2, "q8_0": 3e-2}
"""Largest absolute logit difference from the float32 safetensors export, per dtype (measured on the random tiny
model: 0, 4e-4, 2.3e-3, 7.2e-3)."""

TEXTS = ["The quick brown fox jumps over the lazy dog.", "def f(x):\n    return x ** 2  # square",
         "Digits 1234567890 and 3.14159", "spaces    and\t\ttabs\n\n\nlines", "héllo wörld — 10 µm, 東京"]
"""English, code, digits, whitespace runs and non-ASCII text."""


@pytest.fixture
def smollm2_run(tmp_path):
    """A checkpoint of a tiny model with the real SmolLM2 tokenizer (the offline copy) and its vocabulary."""
    cfg = ModelConfig(vocab_size=49152, n_layers=2, d_model=64, d_ff=160, n_heads=4, n_kv_heads=2, max_seq_len=64)
    run = tmp_path / "run"
    config = Config(run=RunConfig(out_dir=str(run)), model=cfg, tokenizer=TokenizerConfig(name="smollm2-offline"))
    config.train.seq_len = cfg.max_seq_len
    save_config(config, run / "config.yaml")
    return add_checkpoint(run, tiny_model(cfg), 1)


def _from_gguf(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                 trust_remote_code=False).eval()
    return model, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, trust_remote_code=False)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
def test_a_gguf_export_reads_back_as_the_safetensors_export(smollm2_run, tmp_path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = export(smollm2_run, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, trust_remote_code=False).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    path = export_gguf(smollm2_run, tmp_path / "gguf" / f"model-{dtype}.gguf", dtype)
    model, tokenizer = _from_gguf(path)
    ids = torch.tensor([hf_tokenizer(TEXTS[0])["input_ids"]])
    assert (_logits(model, ids) - _logits(hf, ids)).abs().max().item() <= TOLERANCE[dtype]
    for text in TEXTS:
        assert tokenizer(text)["input_ids"] == hf_tokenizer(text)["input_ids"], text
    assert not [p.name for p in path.parent.iterdir() if p.name != path.name]  # no temporary left


def test_every_key_written_reads_back(smollm2_run, tmp_path):
    import gguf

    path = export_gguf(smollm2_run, tmp_path / "model.gguf", "q8_0")
    reader = gguf.GGUFReader(str(path))
    written = {"general.architecture", "general.name", "general.file_type", "llama.context_length",
               "llama.embedding_length", "llama.block_count", "llama.feed_forward_length", "llama.attention.head_count",
               "llama.attention.head_count_kv", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
               "llama.vocab_size", "llama.rope.dimension_count", "tokenizer.ggml.model", "tokenizer.ggml.pre",
               "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
               "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
               "tokenizer.ggml.add_bos_token"}
    assert written <= set(reader.fields), written - set(reader.fields)  # every key edulm writes reads back
    fields = {name: reader.fields[name].contents() for name in reader.fields
              if not name.startswith("tokenizer.ggml.") or name in ("tokenizer.ggml.model", "tokenizer.ggml.pre")}
    assert fields["llama.rope.freq_base"] == pytest.approx(100000.0) and fields["general.file_type"] == 7  # MOSTLY_Q8_0
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    assert (fields["llama.embedding_length"], fields["llama.feed_forward_length"], fields["llama.context_length"]) == (
        64, 160, 64)
    assert (fields["llama.attention.head_count"], fields["llama.attention.head_count_kv"]) == (4, 2)
    assert fields["llama.rope.dimension_count"] == 16 and fields["llama.vocab_size"] == 49152
    assert (fields["tokenizer.ggml.model"], fields["tokenizer.ggml.pre"]) == ("gpt2", "smollm")  # as SmolLM2's own
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == 49152
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == 0  # <|endoftext|>
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" not in kinds  # tied embeddings: llama.cpp uses token_embd.weight


def test_a_chat_template_travels_into_the_file(smollm2_run, tmp_path):
    import json

    import gguf

    folder = export(smollm2_run, tmp_path / "hf")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    path = export_gguf(folder, tmp_path / "chat.gguf")
    assert gguf.GGUFReader(str(path)).fields["tokenizer.chat_template"].contents() == template


def test_a_tokenizer_trained_by_edulm_exports_with_gpt2_pre_tokenization(run_dir, tiny_model_config, tmp_path):
    from transformers import AutoModelForCausalLM

    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    path = export_gguf(ckpt, tmp_path / "model.gguf")
    import gguf

    assert gguf.GGUFReader(str(path)).fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    model, tokenizer = _from_gguf(path)
    hf = AutoModelForCausalLM.from_pretrained(str(export(ckpt, tmp_path / "hf")), dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 40, 200, 319]])
    assert (_logits(model, ids) - _logits(hf, ids)).abs().max().item() <= TOLERANCE["f32"]


def test_a_tokenizer_llama_cpp_cannot_split_alike_is_refused(tmp_path, run_dir, tiny_model_config):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from edulm.tokenizer.loading import save_tokenizer

    core = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "<|endoftext|>": 2}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    other = tmp_path / "whitespace-tokenizer"
    save_tokenizer(PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>"), other)
    cfg = Config(run=RunConfig(out_dir=str(run_dir)), model=tiny_model_config, tokenizer=TokenizerConfig(name=str(other)))
    cfg.train.seq_len = tiny_model_config.max_seq_len
    save_config(cfg, run_dir / "config.yaml")
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    with pytest.raises(UsageError, match="has no llama.cpp match"):
        export_gguf(ckpt, tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()


def test_the_command_line_and_its_bad_input(smollm2_run, tmp_path, capsys):
    out = tmp_path / "model.gguf"
    assert main(["export", str(smollm2_run), "--format", "gguf", "--out", str(out), "--dtype", "f16"]) == 0
    assert f"exported GGUF file: {out}" in capsys.readouterr().out
    before = out.read_bytes()
    for argv, message in ((["--dtype", "q4_k"], "is not a GGUF type"), (["--out", str(tmp_path / "model.bin")], "NAME.gguf")):
        args = ["export", str(smollm2_run), "--format", "gguf", "--out", str(out), *argv]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert out.read_bytes() == before  # a refused export leaves the file as it was


def test_a_failed_export_leaves_the_previous_file_and_no_temporary(smollm2_run, tmp_path, monkeypatch):
    import gguf

    out = export_gguf(smollm2_run, tmp_path / "model.gguf", "f16")
    before = out.read_bytes()

    def broken(self):
        raise OSError("the disk went away")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", broken)
    with pytest.raises(OSError, match="the disk went away"):
        export_gguf(smollm2_run, out, "f32")
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.gguf", "run"]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", GGUF_DTYPES)
def test_the_real_smollm2_weights_export_to_gguf(smollm2, tmp_path, dtype):
    model, folder, tokenizer = smollm2
    path = export_gguf(folder, tmp_path / f"smollm2-{dtype}.gguf", dtype)
    loaded, gguf_tokenizer = _from_gguf(path)
    ids = torch.tensor([tokenizer(" ".join(TEXTS))["input_ids"]])
    got, want = _logits(loaded, ids), _logits(model, ids)
    # Measured on these 73 tokens (logits spanning 72): f32 exact; q8_0 up to 1.31, the same next token at 72 of 73
    # positions (f16: 0.038, bf16: 0.23, both every position).
    assert (got - want).abs().max().item() <= {"f32": 1e-4, "f16": 0.1, "bf16": 0.5, "q8_0": 2.0}[dtype]
    assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() >= {"q8_0": 0.95}.get(dtype, 1.0)
    for text in TEXTS:
        assert gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text


def test_edulm_perplexity_scores_a_gguf_file_like_its_folder(smollm2_run, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(TEXTS) * 3)
    folder = export(smollm2_run, tmp_path / "hf")
    losses = {}
    for name, model in (("folder", folder), ("f32", export_gguf(smollm2_run, tmp_path / "m-f32.gguf")),
                        ("q8_0", export_gguf(smollm2_run, tmp_path / "m-q8_0.gguf", "q8_0"))):
        assert main(["perplexity", str(model), "--text", str(text), "--device", "cpu"]) == 0
        losses[name] = float(capsys.readouterr().out.split("loss=")[1].split()[0])
    assert losses["f32"] == pytest.approx(losses["folder"], abs=1e-5)
    assert losses["q8_0"] == pytest.approx(losses["folder"], abs=1e-2)
    assert main(["perplexity", str(tmp_path / "missing.gguf"), "--text", str(text)]) == 2
    assert "no such GGUF file" in capsys.readouterr().err
