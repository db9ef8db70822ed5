"""FIM prompt building on literal inputs with the real Qwen2.5-Coder tokenizer."""

from engine.prompt import PromptBudget, build_fim_prompt, keep_head, keep_tail
from engine.registry import load_registry

FAMILY = load_registry().model("qwen2.5-coder-0.5b").family


def test_prompt_layout(tokenizer):
    prompt = build_fim_prompt(tokenizer, FAMILY, "def f():\n    return ", "\n", path="pkg/app.py")
    text = tokenizer.decode(prompt.token_ids)
    assert text == "<|file_sep|>pkg/app.py\n<|fim_prefix|>def f():\n    return <|fim_suffix|>\n<|fim_middle|>"
    assert prompt.token_ids[-1] == tokenizer.convert_tokens_to_ids("<|fim_middle|>")


def test_prompt_without_path_has_no_file_header(tokenizer):
    prompt = build_fim_prompt(tokenizer, FAMILY, "a", "b")
    assert tokenizer.decode(prompt.token_ids) == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"


def test_control_tokens_in_user_text_stay_plain_text(tokenizer):
    prompt = build_fim_prompt(tokenizer, FAMILY, 's = "<|fim_middle|>"', "")
    fim_middle = tokenizer.convert_tokens_to_ids("<|fim_middle|>")
    assert prompt.token_ids.count(fim_middle) == 1  # only the template's own


def test_prefix_keeps_whole_last_lines_within_budget(tokenizer):
    prefix = "".join(f"line_{i} = {i}\n" for i in range(200)) + "x = "
    kept, cut = keep_tail(tokenizer, prefix, 40)
    assert cut and prefix.endswith(kept)
    assert kept.startswith("line_")  # starts at a line start
    assert len(tokenizer(kept, add_special_tokens=False).input_ids) <= 40


def test_suffix_keeps_whole_first_lines_within_budget(tokenizer):
    suffix = "\n" + "".join(f"y_{i} = {i}\n" for i in range(200))
    kept, cut = keep_head(tokenizer, suffix, 30)
    assert cut and suffix.startswith(kept) and kept.endswith("\n")
    assert len(tokenizer(kept, add_special_tokens=False).input_ids) <= 30


def test_short_text_is_not_cut(tokenizer):
    assert keep_tail(tokenizer, "a = 1\nb = ", 100) == ("a = 1\nb = ", False)
    assert keep_head(tokenizer, "\nc = 3\n", 100) == ("\nc = 3\n", False)


def test_budget_applies_to_whole_prompt(tokenizer):
    prefix = "x = 1\n" * 1000
    prompt = build_fim_prompt(tokenizer, FAMILY, prefix, "", budget=PromptBudget(64, 16))
    assert prompt.truncated_prefix and len(prompt.token_ids) <= 64 + 16 + 3
