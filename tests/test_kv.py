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


def test_reserved_cache_appends_in_place_and_equals_concatenation(model):
    ids = [5, 9, 2, 7, 11, 3, 8, 1]
    plain = full_keys(model, ids[:4])
    reserved = full_keys(model, ids[:4])
    kv.reserve(reserved, 8)
    buffer = reserved.layers[0].keys.data_ptr()
    for token in ids[4:]:
        kv.encode(model, plain, [token])
        kv.encode(model, reserved, [token])
    assert reserved.layers[0].keys.data_ptr() == buffer  # no copy: the rows went into the room
    for a, b in zip(plain.layers, reserved.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_reserved_cache_overwrites_cropped_rows_and_outgrows_its_room(model):
    # a rejected draft is cropped, then the next pass writes where it was; past the room it concatenates
    cache = full_keys(model, [1, 2, 3])
    kv.reserve(cache, 2)
    kv.encode(model, cache, [4, 99])
    kv.crop_to(cache, 4)
    kv.encode(model, cache, [5, 6, 7])  # 4 + 3 rows > 3 + 2 reserved: concatenated
    expected = full_keys(model, [1, 2, 3, 4, 5, 6, 7])
    assert kv.length(cache) == 7
    assert torch.allclose(cache.layers[1].keys, expected.layers[1].keys, atol=1e-6)


def test_snapshot_of_a_reserved_cache_stays_valid(model):
    cache = full_keys(model, [1, 2, 3])
    kv.reserve(cache, 4)
    kv.encode(model, cache, [4])
    saved = kv.snapshot(cache)
    before = saved[0][0].clone()
    kv.crop_to(cache, 2)
    kv.encode(model, cache, [42, 43])  # would overwrite rows 2-3 in place if the snapshot had not frozen it
    assert torch.equal(saved[0][0], before)
