"""Facts about transformers' KV cache that PIE depends on; these fail if a release changes them."""

import pytest
import torch

from cache import kv


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model.model


def full_keys(model, ids):
    cache = kv.new_cache(model.config)
    kv.encode(model, cache, ids)
    return cache


def test_crop_takes_a_negative_count_and_keeps_the_head(model):
    cache = full_keys(model, [1, 2, 3, 4, 5])
    first_keys = cache.layers[0].keys.clone()
    kv.crop_to(cache, 3)
    assert kv.length(cache) == 3
    assert torch.equal(cache.layers[0].keys, first_keys[..., :3, :])
    with pytest.raises(ValueError):
        cache.crop(2)  # 5.23 refuses the 4.x-style absolute length


def test_keys_are_stored_after_rope(model):
    # the same token at two positions has different cached keys (rotated), same values
    cache = full_keys(model, [7, 7])
    keys, values = cache.layers[0].keys, cache.layers[0].values
    assert not torch.allclose(keys[..., 0, :], keys[..., 1, :])
    assert torch.allclose(values[..., 0, :], values[..., 1, :])


def test_encoding_after_a_cache_continues_positions(model):
    # encoding [1,2] then [3,4] on the cache equals encoding [1,2,3,4] at once
    whole = full_keys(model, [1, 2, 3, 4])
    split = full_keys(model, [1, 2])
    logits = kv.encode(model, split, [3, 4])
    for a, b in zip(whole.layers, split.layers):
        assert torch.allclose(a.keys, b.keys, atol=1e-5)
        assert torch.allclose(a.values, b.values, atol=1e-5)
    reference = model(torch.tensor([[1, 2, 3, 4]])).logits[0, -1]
    assert torch.allclose(logits, reference, atol=1e-4)


def test_position_ids_are_honoured(model):
    # the default position is the cache length; explicit ones must change the keys
    cache = full_keys(model, [1, 2])
    default = kv.new_cache(model.config)
    kv.append_rows(default, kv.rows(kv.snapshot(cache), 0, 2))
    with torch.inference_mode():
        model(input_ids=torch.tensor([[3]]), past_key_values=default, position_ids=torch.tensor([[10]]), use_cache=True)
    at_two = full_keys(model, [1, 2, 3])
    assert not torch.allclose(default.layers[0].keys[..., 2, :], at_two.layers[0].keys[..., 2, :])


def test_snapshot_survives_later_changes_and_restores(model):
    cache = full_keys(model, [1, 2, 3])
    saved = kv.snapshot(cache)
    before = [k.clone() for k, _ in saved]
    kv.crop_to(cache, 1)
    kv.encode(model, cache, [9, 9, 9])
    kv.restore(cache, saved)
    assert kv.length(cache) == 3
    assert all(torch.equal(k, b) for (k, _), b in zip(kv.snapshot(cache), before))
