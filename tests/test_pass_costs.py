"""Pass prices: measured on the model itself, kept per machine, read back instead of measured again."""

from __future__ import annotations

import json
import logging

import pytest

from engine.pass_costs import PassCosts, costs_dir, flat_costs, measure_pass_costs, pass_costs_for


def test_prices_between_and_beyond_the_measured_cache_lengths():
    costs = PassCosts(keys=(2048, 256), seconds=((0.06, 0.07, 0.09), (0.05, 0.05, 0.06)))  # any order
    assert costs.at(256) == pytest.approx((0.05, 0.05, 0.06))
    assert costs.at(2048) == pytest.approx((0.06, 0.07, 0.09))
    assert costs.at(1152) == pytest.approx((0.055, 0.06, 0.075))  # halfway: on the line
    assert costs.at(3840) == pytest.approx((0.07, 0.09, 0.12))  # past the longest: the line goes on
    assert costs.at(0) == pytest.approx((0.05, 0.05, 0.06))  # never below the shortest cache's price
    assert costs.relative(1152) == pytest.approx((1.0, 0.06 / 0.055, 0.075 / 0.055))


def test_noise_never_makes_more_rows_cheaper_than_fewer():
    costs = PassCosts(keys=(256,), seconds=((0.10, 0.09, 0.12, 0.11),))
    assert costs.relative(1000) == pytest.approx((1.0, 1.0, 1.2, 1.2))
    assert flat_costs(4, per_row=0.25).relative(99) == (1.0, 1.25, 1.5, 1.75)


def test_malformed_prices_are_refused():
    for data in ({"keys": [], "seconds": []}, {"keys": [1, 2], "seconds": [[0.1]]}, {"keys": [1], "seconds": [[0.1, 0.0]]},
                 {"keys": [1], "seconds": [[]]}):
        with pytest.raises(ValueError):
            PassCosts.from_json(data)
    costs = PassCosts((256, 2048), ((0.1, 0.2), (0.3, 0.4)))
    assert PassCosts.from_json(json.loads(json.dumps(costs.to_json()))) == costs


def test_measuring_times_every_row_count_on_each_cache_length(tiny_model):
    costs = measure_pass_costs(tiny_model.model, keys=(16, 64), most_rows=4, repeats=1)
    assert costs.keys == (16, 64) and [len(row) for row in costs.seconds] == [4, 4]
    assert all(seconds > 0 for row in costs.seconds for seconds in row)
    relative = costs.relative(40)
    assert relative[0] == 1.0 and list(relative) == sorted(relative)


def test_prices_are_measured_once_per_machine_then_read(tiny_model, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LIVEFIM_HOME", str(tmp_path))
    calls, told = [], []

    def measure(loaded):
        calls.append(loaded.name)
        return PassCosts((256,), ((0.01, 0.011, 0.012),))

    first = pass_costs_for(tiny_model, measure=measure, progress=told.append)
    assert calls == [tiny_model.name] and "measuring what passes" in told[0] and "1.00 1.10 1.20" in told[1]
    assert pass_costs_for(tiny_model, measure=measure, progress=told.append) == first and len(calls) == 1  # read from disk
    assert len(told) == 2
    [kept] = costs_dir().glob("*.json")
    assert kept.parent == tmp_path / "pass_costs"
    kept.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="engine.pass_costs"):
        assert pass_costs_for(tiny_model, measure=measure, progress=told.append) == first  # unreadable: measured again, kept again
    assert len(calls) == 2 and "ignoring unreadable pass costs" in caplog.text
    assert PassCosts.from_json(json.loads(kept.read_text())) == first
