"""Speculative decoding against plain decoding: same greedy tokens, same sampling distribution."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from cache import kv
from engine.decode import decode, token_distribution, verify_draft
from engine.runtime import LoadedModel
from engine.speculate import AcceptanceTally, Combined, Draft, DraftModel, DraftPricing, PromptLookup, best_draft_length
from engine.stops import CompletionContext
from engine.types import CompletionOptions, FinishReason, Scope
from tests.conftest import make_tiny_model

AVX2_LIKE = (1.0, 1.0, 1.02, 1.05, 1.3, 1.55, 1.8, 2.2, 2.3)  # a pass's price by rows, a step = 1
BLOCK = CompletionContext(prefix="", suffix="", scope=Scope.BLOCK, max_lines=10_000)

PROMPTS = [
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return",
    "import os\nimport sys\n\nfor name in os.listdir('.'):\n    print(name)\nfor",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "x = [1, 2, 3]\ny = [1, 2, 3]\nz = [",
    "if __name__ == '__main__':\n    main()\n",
    "SELECT id, name FROM users WHERE id = 1;\nSELECT id, name FROM",
]


def noisy_copy(loaded: LoadedModel, scale: float, seed: int) -> LoadedModel:
    """The same model with Gaussian noise on every weight: a draft that agrees often, not always."""
    model = Qwen2ForCausalLM(loaded.model.config).eval()
    model.load_state_dict(loaded.model.state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale * parameter.std())
    return LoadedModel(name="noisy", model=model, tokenizer=loaded.tokenizer, family=loaded.family, device=loaded.device)


@pytest.fixture(scope="module")
def drafts(tiny_model, tokenizer) -> dict[str, LoadedModel]:
    return {"same": tiny_model, "noisy": noisy_copy(tiny_model, 0.3, 1), "other": make_tiny_model(tokenizer, seed=5)}


def run(loaded, prompt_ids, options, proposer=None, history=None, cache=None):
    steps = list(decode(loaded, prompt_ids, BLOCK, options, cache=cache, proposer=proposer, history=history))
    assert steps[-1].finish_reason is not FinishReason.NONE
    return steps[-1]


def proposers(kind: str, prompt_ids: list[int], draft: LoadedModel | None, options: CompletionOptions):
    distribution = (lambda logits: token_distribution(logits, options)) if options.temperature > 0 else None
    if kind == "lookup":
        return PromptLookup([prompt_ids], max_draft=6)
    if kind == "priced":  # sized by AVX2-like prices: 4 rows for a step's, then a quarter step a row
        return PromptLookup([prompt_ids], max_draft=6, pricing=DraftPricing(AVX2_LIKE[:7]))
    model = DraftModel(draft.model, DynamicCache(config=draft.model.config), list(prompt_ids), max_draft=5, min_confidence=0.0,
                       distribution=distribution, generator=torch.Generator().manual_seed(3))
    if kind == "draft":
        return model
    return Combined(PromptLookup([prompt_ids], max_draft=6), model, min_lookup=2)


@pytest.mark.parametrize("kind,draft_name", [("lookup", None), ("priced", None), ("draft", "same"), ("draft", "noisy"), ("draft", "other"),
                                             ("combined", "noisy")])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_speculation_equals_plain_decoding(tiny_model, tokenizer, drafts, kind, draft_name, prompt):
    ids = tokenizer(prompt).input_ids
    options = CompletionOptions(max_tokens=24)
    plain = run(tiny_model, ids, options)
    fast = run(tiny_model, ids, options, proposers(kind, ids, drafts.get(draft_name), options), history=ids)
    assert fast.token_ids == plain.token_ids
    assert fast.text == plain.text and fast.finish_reason == plain.finish_reason
    assert fast.target_forwards <= plain.target_forwards
    if draft_name == "same":  # a perfect draft: every drafted token is accepted
        assert fast.accepted_tokens == fast.drafted_tokens > 0


class Successor:
    """A fake LM that predicts ``t + 1`` after token ``t`` (the stop token after ``last``), at every position.

    It writes one dummy row per fed token, so the decode loop's cache bookkeeping is real."""

    def __init__(self, config, vocab: int, last: int, stop: int):
        self.config, self.vocab, self.last, self.stop, self.forwards = config, vocab, last, stop, 0

    def __call__(self, input_ids, past_key_values=None, use_cache=True, logits_to_keep=1, **_):
        self.forwards += 1
        fed = input_ids[0].tolist()
        for layer in range(len(past_key_values.layers)):
            past_key_values.update(torch.zeros(1, 1, len(fed), 2), torch.zeros(1, 1, len(fed), 2), layer)
        logits = torch.full((1, logits_to_keep, self.vocab), -1e4)
        for row, token in enumerate(fed[len(fed) - logits_to_keep:]):
            logits[0, row, self.stop if token >= self.last else token + 1] = 0.0
        return SimpleNamespace(logits=logits)


def test_a_copying_model_gains_from_prompt_lookup(tiny_model):
    """The target continues a run that the repository context holds: lookup drafts are all right, passes drop 3x+."""
    context_piece = list(range(1000, 1040))
    prompt = [7, 8, 1000, 1001, 1002]
    stop = 151643

    def loaded_successor():
        fake = Successor(tiny_model.model.config, tiny_model.family.vocab_size, last=1039, stop=stop)
        return SimpleNamespace(model=fake, tokenizer=DigitTokenizer(), device=torch.device("cpu"), stop_token_ids=frozenset({stop}))

    plain = run(loaded_successor(), prompt, CompletionOptions(max_tokens=64))
    fast = run(loaded_successor(), prompt, CompletionOptions(max_tokens=64), PromptLookup([context_piece, prompt], max_draft=8),
               history=prompt)
    assert fast.token_ids == plain.token_ids == tuple(range(1003, 1040))
    assert fast.finish_reason is FinishReason.STOP_TOKEN
    assert fast.target_forwards * 3 <= plain.target_forwards
    assert fast.accepted_tokens == fast.drafted_tokens


def test_caches_hold_exactly_the_accepted_text_after_every_step(tiny_model, tokenizer, drafts):
    ids = tokenizer(PROMPTS[0]).input_ids
    options = CompletionOptions(max_tokens=30)
    target_cache = DynamicCache(config=tiny_model.model.config)
    inner = DraftModel(drafts["noisy"].model, DynamicCache(config=tiny_model.model.config), list(ids), max_draft=4, min_confidence=0.0)
    checks = []

    class Spy:
        name = "spy"

        def begin(self, history):
            inner.begin(history)

        def propose(self, generated, limit):
            # target: the prompt and every accepted token but the last (fed by the coming pass)
            assert kv.length(target_cache) == len(ids) + len(generated) - 1
            draft = inner.propose(generated, limit)
            # draft model: rows for the prompt, the accepted tokens, and its own drafts but the last
            assert inner.fed == [*generated, *draft.tokens[:-1]]
            assert inner.rows == len(ids) + len(inner.fed)
            checks.append(len(draft.tokens))
            return draft

    fast = run(tiny_model, ids, options, Spy(), cache=target_cache)
    assert fast.token_ids == run(tiny_model, ids, options).token_ids
    assert len(checks) >= 3 and fast.accepted_tokens < fast.drafted_tokens  # some rejections were rolled back


def test_prompt_lookup_continues_the_latest_match():
    lookup = PromptLookup([[1, 2, 3, 4, 9], [7, 1, 2, 3, 5, 6]], max_draft=3)
    lookup.begin([0, 2, 3])
    assert lookup.propose([], 8).tokens == (5, 6)  # the later "2 3", cut at its piece's end
    assert lookup.propose([5, 6, 1, 2], 8).tokens == (3, 5, 6)  # the suggestion's own tokens are history
    assert lookup.propose([42, 43], 8).tokens == ()  # no match
    assert lookup.propose([5], 0).tokens == ()


def test_lookup_continuations_are_distinct_and_the_first_is_the_draft():
    corpus = [[1, 2, 3, 4], [1, 2, 5, 6], [9, 1, 2, 3, 4], [7, 1, 2, 8]]
    lookup = PromptLookup(corpus, max_draft=2)
    lookup.begin([0, 1, 2])
    assert lookup.continuations([], 8, most=4) == [(8,), (3, 4), (5, 6)]  # latest first; "3 4" twice, kept once
    assert lookup.propose([], 8).tokens == (8,)
    assert lookup.continuations([42], 8, most=4) == []


def test_lookup_drafts_grow_while_they_come_true_and_shrink_after_a_miss():
    text = list(range(10, 40))
    lookup = PromptLookup([text], max_draft=8, first_draft=2)
    lookup.begin([10, 11])
    assert lookup.propose([], 32).tokens == (12, 13)  # first_draft tokens
    assert lookup.propose([12, 13, 14], 32).tokens == (15, 16, 17, 18)  # all came true (+ the bonus 14): doubled
    generated = [12, 13, 14, 15, 16, 17, 18, 19]
    assert lookup.propose(generated, 32).tokens == tuple(range(20, 28))  # doubled again, capped at max_draft
    generated += [20, 21, 22, 99]  # 3 of the 8 came true, then the target chose 99
    assert lookup.propose(generated + [10, 11], 32).tokens == (12, 13, 14, 15)  # 3 + 1
    generated += [10, 11, 77]  # none came true
    assert lookup.propose(generated + [12, 13], 32).tokens == (14, 15)  # back to first_draft (not below it)
    assert lookup.propose(generated + [12, 13, 14, 15, 16], 1).tokens == (17,)  # the caller's limit still rules
    lookup.begin([30, 31])
    assert lookup.propose([], 32).tokens == (32, 33)  # a new suggestion starts short again


def expected_tokens_per_price(length: int, first_rate: float, next_rate: float, prices) -> float:
    """The slow reference: a pass's token, plus draft token i when the first i all come true."""
    chances = [first_rate * next_rate ** (i - 1) for i in range(1, length + 1)]
    return (1 + math.fsum(chances)) / prices[length]


@pytest.mark.parametrize("prices", [AVX2_LIKE, (1.0,) * 9, tuple(1 + 0.05 * r for r in range(9)), tuple(1.0 + r for r in range(9))])
def test_best_draft_length_brings_the_most_tokens_per_price(prices):
    generator = torch.Generator().manual_seed(0)
    for first_rate, next_rate in torch.rand((200, 2), generator=generator).tolist():
        for available in (0, 1, 3, 8):
            chosen = best_draft_length(available, first_rate, next_rate, prices)
            assert 0 <= chosen <= available
            best = max(expected_tokens_per_price(n, first_rate, next_rate, prices) for n in range(available + 1))
            assert expected_tokens_per_price(chosen, first_rate, next_rate, prices) == pytest.approx(best, rel=1e-9)
    assert best_draft_length(8, 0.3, 0.5, (1.0,) * 9) == 8  # free rows: draft all there is
    assert best_draft_length(8, 0.3, 0.5, tuple(1.0 + r for r in range(9))) == 0  # a row costs a step: only sure drafts pay


def test_acceptance_tally_counts_first_tokens_and_the_ones_after():
    tally = AcceptanceTally(prior_first=(1.0, 1.0), prior_next=(1.0, 1.0), memory=1.0)
    tally.record("a", drafted=3, taken=0)  # the first wrong: nothing known of the rest
    assert tally.rates("a") == (pytest.approx(1 / 3), pytest.approx(1 / 2))
    tally.record("a", drafted=3, taken=3)  # all taken: 2 next-token hits
    tally.record("a", drafted=3, taken=1)  # the second wrong: 1 next-token miss
    assert tally.rates("a") == (pytest.approx(3 / 5), pytest.approx(3 / 5))
    assert tally.rates("b") == (0.5, 0.5)  # states are apart
    tally.record("a", drafted=0, taken=0)  # no draft: nothing learned
    assert tally.rates("a") == (pytest.approx(3 / 5), pytest.approx(3 / 5))
    fading = AcceptanceTally(prior_first=(1.0, 1.0), memory=0.5)
    for _ in range(20):
        fading.record("a", drafted=1, taken=0)
    assert fading.rates("a")[0] < 0.01  # the past fades: recent misses outweigh the prior


def test_priced_lookup_drafts_what_pays_and_learns_from_its_drafts():
    text = list(range(10, 200))
    first = PromptLookup([text], max_draft=8, pricing=DraftPricing(AVX2_LIKE))
    first.begin([10, 11])
    assert first.propose([], 32).tokens == (12, 13, 14)  # middling rates: the three rows as cheap as a step
    assert first.propose([12], 1).tokens == (13,)  # the caller's limit still rules
    pricing = DraftPricing(tuple(1 + 0.05 * r for r in range(9)))  # 5% a row
    lookup = PromptLookup([text], max_draft=8, pricing=pricing)
    lookup.begin([10, 11])
    generated: list[int] = []
    draft = lookup.propose(generated, 32).tokens
    assert 3 < len(draft) < 8  # cheap rows, middling rates: longer, not all
    for _ in range(6):  # drafts keep coming true whole: the copy state's rates climb, drafts lengthen
        generated += [*draft, draft[-1] + 1]
        draft = lookup.propose(generated, 32).tokens
    assert len(draft) == 8
    fresh = pricing.tally.rates((False, 2))
    for attempt in range(60):  # a state whose drafts never come true stops drafting
        lookup.begin([10 + 2 * attempt, 11 + 2 * attempt])
        if not lookup.propose([], 32).tokens:
            break
        lookup.propose([99], 32)  # the target took none: the next call learns it
    assert pricing.tally.rates((False, 2))[0] < fresh[0]
    assert lookup.propose([], 32).tokens == ()
    copying = PromptLookup([text], max_draft=8, pricing=pricing)
    copying.begin([20, 21])
    assert copying.propose([], 32).tokens == ()  # the shared tally carries over to the next request


def test_draft_model_stops_when_its_confidence_drops(tiny_model, tokenizer):
    ids = tokenizer(PROMPTS[1]).input_ids
    sure = DraftModel(tiny_model.model, DynamicCache(config=tiny_model.model.config), list(ids), max_draft=6, min_confidence=0.0)
    unsure = DraftModel(tiny_model.model, DynamicCache(config=tiny_model.model.config), list(ids), max_draft=6, min_confidence=0.99)
    assert len(sure.propose([11], 10).tokens) == 6
    assert len(unsure.propose([11], 10).tokens) == 1  # a random model is never 99% sure: only the first token


# -- rejection sampling ------------------------------------------------------------------------

VOCAB = 6


def small_model(seed: int) -> Qwen2ForCausalLM:
    """A random Qwen2 over a 6-token vocabulary, so exact distributions can be enumerated."""
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # sharper distributions, far from uniform
    return model


class DigitTokenizer:
    """Every token is one letter: no stop rule ever fires on the text."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(ord("a") + i % 26) for i in ids)


def exact_pairs(model, prompt: list[int], options: CompletionOptions) -> dict[tuple[int, int], float]:
    """P(first two tokens) under the target's own sampling distribution, by enumeration."""
    with torch.no_grad():
        first = token_distribution(model(torch.tensor([prompt])).logits[0, -1], options)
        table = {}
        for a in range(VOCAB):
            second = token_distribution(model(torch.tensor([prompt + [a]])).logits[0, -1], options)
            for b in range(VOCAB):
                table[(a, b)] = float(first[a] * second[b])
    return table


def chi_square_p_value(counts: dict, expected: dict[tuple[int, int], float], n: int) -> float:
    """Pearson's test with outcomes of expected count < 5 pooled; p-value via the Wilson-Hilferty approximation."""
    statistic, dof, pooled_observed, pooled_expected = 0.0, -1, 0, 0.0
    for outcome, probability in expected.items():
        if n * probability < 5:
            pooled_observed += counts.get(outcome, 0)
            pooled_expected += n * probability
            continue
        statistic += (counts.get(outcome, 0) - n * probability) ** 2 / (n * probability)
        dof += 1
    if pooled_expected > 0:
        statistic += (pooled_observed - pooled_expected) ** 2 / pooled_expected
        dof += 1
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_rejection_sampling_keeps_the_target_distribution():
    target, drafter = small_model(0), small_model(1)
    loaded = SimpleNamespace(model=target, tokenizer=DigitTokenizer(), device=torch.device("cpu"), stop_token_ids=frozenset())
    prompt = [1, 4, 2]
    options = CompletionOptions(max_tokens=2, temperature=1.0, top_p=0.95)
    expected = exact_pairs(target, prompt, options)
    draft_only = exact_pairs(drafter, prompt, options)
    assert sum(abs(expected[k] - draft_only[k]) for k in expected) > 0.5  # the draft really is a different model
    n, counts, accepted = 3000, {}, 0
    for seed in range(n):
        proposer = DraftModel(drafter, DynamicCache(config=drafter.config), list(prompt), max_draft=2, min_confidence=0.0,
                              distribution=lambda logits: token_distribution(logits, options),
                              generator=torch.Generator().manual_seed(10_000 + seed))
        run_options = CompletionOptions(max_tokens=3, temperature=1.0, top_p=0.95, seed=seed)
        steps = list(decode(loaded, prompt, BLOCK, run_options, proposer=proposer))
        pair = steps[-1].token_ids[:2]
        counts[pair] = counts.get(pair, 0) + 1
        accepted += steps[-1].accepted_tokens
    assert accepted > 0  # drafts were accepted, and ...
    assert chi_square_p_value(counts, expected, n) > 1e-3  # ... the output is still the target's distribution
    assert chi_square_p_value(counts, draft_only, n) < 1e-6  # the test can tell the draft's distribution apart


def test_verify_draft_on_a_hand_computed_case():
    """p = (0.5, 0.5, 0), q one-hot on token 2 (p = 0 there): always rejected, replaced from p."""
    logits = torch.log(torch.tensor([[0.5, 0.5, 1e-30], [1.0, 1e-30, 1e-30]]))
    options = CompletionOptions(temperature=1.0)
    generator = torch.Generator().manual_seed(0)
    outcomes = [verify_draft(logits, Draft((2,)), options, generator) for _ in range(400)]
    assert {accepted for accepted, _ in outcomes} == {0}
    share_zero = sum(token == 0 for _, token in outcomes) / len(outcomes)
    assert 0.4 < share_zero < 0.6
    greedy = verify_draft(logits, Draft((0,)), CompletionOptions(), None)
    assert greedy == (1, 0)  # argmax of row 0 is token 0 (a tie broken by argmax: first), accepted; then row 1's argmax


def real_code_prompts(tokenizer, count: int) -> list[list[int]]:
    """Cuts of real standard-library modules: the start of a file up to a line in its first function bodies."""
    import sysconfig
    from pathlib import Path

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    prompts = []
    for name in ("textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "bisect.py", "colorsys.py", "heapq.py", "keyword.py"):
        lines = (stdlib / name).read_text(encoding="utf-8").splitlines(keepends=True)
        body = next((i for i, line in enumerate(lines) if line.startswith("def ") or line.startswith("    def ")), 20)
        prompts.append(tokenizer("".join(lines[: body + 4]))["input_ids"][-300:])
    return prompts[:count]


_PLAIN_CACHE: dict[tuple[int, ...], tuple[int, ...]] = {}


@pytest.mark.real_model
@pytest.mark.parametrize("kind", ["lookup", "priced", "draft", "combined"])
def test_real_model_speculation_equals_plain(real_model, tiny_model, tokenizer, kind):
    """The 0.5B with lookup drafts (often right on real code) and the tiny model as a draft (mostly wrong)."""
    options = CompletionOptions(max_tokens=16)
    drafted = accepted = 0
    for ids in real_code_prompts(tokenizer, 3):
        if tuple(ids) not in _PLAIN_CACHE:  # the reference once per prompt, shared by the three kinds
            _PLAIN_CACHE[tuple(ids)] = run(real_model, ids, options).token_ids
        fast = run(real_model, ids, options, proposers(kind, ids, tiny_model, options), history=ids)
        assert fast.token_ids == _PLAIN_CACHE[tuple(ids)]
        drafted, accepted = drafted + fast.drafted_tokens, accepted + fast.accepted_tokens
    assert drafted > 0 and (kind == "draft" or accepted > 0)
