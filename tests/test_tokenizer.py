"""Tokenizer resolution, the offline SmolLM2 copy, fingerprints and the small BPE trainer."""

from __future__ import annotations

import pytest

from edulm.tokenizer import loading as tk
from edulm.tokenizer.bpe import train_bpe
from edulm.base.errors import UsageError

SENTENCE = "FineWeb-Edu holds 1.3T tokens of educational web pages.\n\n  Indented code: x = f(y)"


@pytest.fixture(scope="module")
def smollm2_tok():
    return tk.load_tokenizer(tk.OFFLINE_SMOLLM2)


@pytest.mark.compat
def test_offline_smollm2_is_the_real_tokenizer(smollm2_tok):
    from transformers import AutoTokenizer

    gguf = tk.smollm2_gguf_path()
    direct = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert len(smollm2_tok) == 49152
    assert smollm2_tok("Hello world, this is edulm.")["input_ids"] == [19556, 905, 28, 451, 314, 953, 336, 93, 30]
    assert smollm2_tok(SENTENCE)["input_ids"] == direct(SENTENCE)["input_ids"]
    assert smollm2_tok.decode(smollm2_tok(SENTENCE)["input_ids"]) == SENTENCE


def test_offline_smollm2_splits_digits_like_the_hub_tokenizer(smollm2_tok):
    from transformers import AutoTokenizer

    # The hub tokenizer.json pre-tokenizes with Digits(individual_digits) before the byte-level split,
    # as the GGUF's `tokenizer.ggml.pre = smollm` says; transformers' GGUF reader alone drops that step.
    text = "x  1 and\t\t2024,   3.5"
    expected = ["x", "ĠĠ", "1", "Ġand", "ĉĉ", "2", "0", "2", "4", ",", "ĠĠĠ", "3", ".", "5"]
    assert smollm2_tok.convert_ids_to_tokens(smollm2_tok(text)["input_ids"]) == expected
    assert smollm2_tok.decode(smollm2_tok(text)["input_ids"]) == text
    gguf = tk.smollm2_gguf_path()
    direct = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert direct.convert_ids_to_tokens(direct(text)["input_ids"]) != expected


def test_offline_smollm2_behaves_like_the_base_tokenizer(smollm2_tok):
    assert tk.document_separator_id(smollm2_tok) == 0
    assert smollm2_tok.eos_token == smollm2_tok.bos_token == "<|endoftext|>"
    assert len(smollm2_tok("a")["input_ids"]) == 1  # no BOS added, as in SmolLM2


def test_cache_is_reused(smollm2_tok):
    folder = tk.offline_smollm2_dir()
    before = (folder / "tokenizer.json").stat().st_mtime_ns
    again = tk.load_tokenizer(tk.OFFLINE_SMOLLM2)
    assert (folder / "tokenizer.json").stat().st_mtime_ns == before
    assert tk.tokenizer_fingerprint(again) == tk.tokenizer_fingerprint(smollm2_tok)


def test_smollm2_hub_id_falls_back_offline_and_says_so_once(smollm2_tok, caplog, monkeypatch):
    monkeypatch.setattr(tk, "_FELL_BACK", set())  # as in a fresh process
    tok = tk.load_tokenizer("HuggingFaceTB/SmolLM2-135M")
    assert tk.tokenizer_fingerprint(tok) == tk.tokenizer_fingerprint(smollm2_tok)
    assert caplog.text.count("offline SmolLM2 tokenizer") == 1  # a warning of the edulm logger
    tk.load_tokenizer("HuggingFaceTB/SmolLM2-135M")  # a run loads it again for its final export: no second warning
    assert caplog.text.count("offline SmolLM2 tokenizer") == 1


def test_other_hub_ids_fail_clearly_offline():
    with pytest.raises(UsageError, match="hub is offline"):
        tk.load_tokenizer("openai-community/gpt2")
    with pytest.raises(UsageError, match="no such file or folder"):
        tk.load_tokenizer("./missing/tokenizer")


def test_train_bpe_and_local_paths(tmp_path, smollm2_tok):
    texts = [f"document {i}: the quick brown fox jumps over the lazy dog {i * 7}" for i in range(200)]
    bpe = train_bpe(texts, vocab_size=400)
    assert len(bpe) <= 400 and tk.document_separator_id(bpe) == 0
    assert bpe.decode(bpe(texts[3])["input_ids"]) == texts[3]
    assert tk.tokenizer_fingerprint(bpe) != tk.tokenizer_fingerprint(smollm2_tok)
    assert tk.tokenizer_fingerprint(train_bpe(texts, vocab_size=400)) == tk.tokenizer_fingerprint(bpe)

    tk.save_tokenizer(bpe, tmp_path / "tok")
    from_folder = tk.load_tokenizer(str(tmp_path / "tok"))
    from_file = tk.load_tokenizer(str(tmp_path / "tok" / "tokenizer.json"))
    for other in (from_folder, from_file):
        assert tk.tokenizer_fingerprint(other) == tk.tokenizer_fingerprint(bpe)
        assert other(texts[5])["input_ids"] == bpe(texts[5])["input_ids"]


def test_bad_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no tokenizer.json"):
        tk.load_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UsageError, match="expected a tokenizer.json"):
        tk.load_tokenizer(str(tmp_path / "x.txt"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(UsageError, match="not a readable tokenizer"):
        tk.load_tokenizer(str(tmp_path / "broken"))
    with pytest.raises(UsageError, match="not a readable tokenizer"):
        tk.load_tokenizer(str(tmp_path / "broken" / "tokenizer.json"))
    with pytest.raises(UsageError, match="too small"):
        train_bpe(["abc"], vocab_size=10)
    with pytest.raises(UsageError, match=r"^tokenizer 'smollm2-ofline': no such file or folder \(did you mean 'smollm2-offline'\?\)$"):
        tk.load_tokenizer("smollm2-ofline")


def test_tokenizer_train_command(tmp_path):
    from edulm.cli import main

    assert main(["tokenizer", "train", "--vocab-size", "600", "--max-docs", "300", "--out", str(tmp_path / "t")]) == 0
    tok = tk.load_tokenizer(str(tmp_path / "t"))
    assert 300 < len(tok) <= 600 and tk.document_separator_id(tok) == 0
    assert main(["tokenizer", "train", "--vocab-size", "70000", "--out", str(tmp_path / "u")]) == 2


def test_train_tokenizer_is_a_typed_library_call(tmp_path):
    from edulm.data.tokenizer_training import train_tokenizer

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(f'{{"body": "lesson {i}: plants need light and water to grow"}}\n' for i in range(50)))
    tok = train_tokenizer(str(docs), tmp_path / "tok", vocab_size=300, text_field="body")
    assert tk.tokenizer_fingerprint(tk.load_tokenizer(str(tmp_path / "tok"))) == tk.tokenizer_fingerprint(tok)
    with pytest.raises(UsageError, match="--max-docs"):
        train_tokenizer(str(docs), tmp_path / "bad", vocab_size=300, text_field="body", max_docs=-1)
    (tmp_path / "empty.jsonl").write_text('{"body": ""}\n')
    with pytest.raises(UsageError, match="no non-empty documents"):
        train_tokenizer(str(tmp_path / "empty.jsonl"), tmp_path / "bad", vocab_size=300, text_field="body")


@pytest.mark.parametrize("marker", ["config.json", "config.yaml", "manifest.json"])
def test_tokenizer_train_leaves_a_model_run_or_shards_folder_alone(tmp_path, capsys, marker):
    from edulm.cli import main

    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / marker).write_text("{}")
    (folder / "tokenizer.json").write_text("the model's own")
    assert main(["tokenizer", "train", "--vocab-size", "300", "--max-docs", "5", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "whose tokenizer files this would replace; choose a new or empty folder" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted([marker, "tokenizer.json"])
    assert (folder / "tokenizer.json").read_text() == "the model's own"


def test_tokenizer_module_does_not_import_the_data_package():
    import subprocess
    import sys

    # tokenizer -> data -> tokenizer was an import cycle; the tokenizer now sits upstream of the data package.
    def loaded_after(module: str, prefix: str) -> str:
        code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('{prefix}')))"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    assert loaded_after("edulm.tokenizer.loading", "edulm.data") == "[]"
    assert loaded_after("edulm.data.builtin_sample", "edulm.tokenizer.loading") == "[]"


@pytest.mark.compat
def test_saved_tokenizer_config_is_read_by_transformers_4_and_5(tmp_path, smollm2_tok):
    import json

    tk.save_tokenizer(smollm2_tok, tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    # 5.x's own class name (TokenizersBackend) does not exist in 4.x; this one exists in both.
    assert config["tokenizer_class"] == tk.PORTABLE_TOKENIZER_CLASS == "PreTrainedTokenizerFast"
    assert not set(tk.LOAD_TIME_KEYS) & set(config)
    special = json.loads((tmp_path / "tok" / "special_tokens_map.json").read_text())
    assert special == {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    again = tk.load_tokenizer(str(tmp_path / "tok"))
    assert again(SENTENCE)["input_ids"] == smollm2_tok(SENTENCE)["input_ids"]
    assert again.special_tokens_map == smollm2_tok.special_tokens_map
