"""The user-call machinery: cache choices read from the release, and how a substituted cache is recognised."""

from types import SimpleNamespace

import torch
import transformers
from transformers.generation import configuration_utils

from cache_conformance.adapter import generation
from cache_conformance.grading import user_calls
from cache_conformance.probes import contract


def test_the_choices_are_the_releases_own_list_plus_the_default_and_the_users_objects():
    choices = user_calls.cache_choices()
    listed = tuple(dict.fromkeys(configuration_utils.ALL_CACHE_IMPLEMENTATIONS))
    assert [c.implementation for c in choices if c.implementation] == list(listed)
    assert [c.id for c in choices if not c.implementation] == ["default", "object-DynamicCache", "object-StaticCache"]
    static = {c.implementation for c in choices if c.static and c.implementation}
    assert static == set(configuration_utils.ALL_STATIC_CACHE_IMPLEMENTATIONS)
    assert {c.object_class: c.static for c in choices if c.object_class} == {"DynamicCache": False,
                                                                             "StaticCache": True}


class MadeUpCache(transformers.DynamicCache):
    """A public cache class a future release might add: it takes a capacity, the batch size and a dtype."""

    def __init__(self, config, max_batch_size: int, max_cache_len: int, dtype=None):
        super().__init__()
        self.made_with = {"config": config, "max_batch_size": max_batch_size, "max_cache_len": max_cache_len,
                          "dtype": dtype}


def test_a_public_cache_class_the_release_adds_becomes_a_users_object_and_an_excluded_one_does_not(monkeypatch):
    for module in (transformers, transformers.cache_utils):  # defined in cache_utils, exported by transformers
        monkeypatch.setattr(module, "MadeUpCache", MadeUpCache, raising=False)
        monkeypatch.setattr(module, "SinkCache", MadeUpCache, raising=False)  # excluded, whatever it is
    monkeypatch.setattr(transformers.cache_utils, "InternalCache", MadeUpCache, raising=False)  # not exported
    assert generation.user_cache_classes() == ("DynamicCache", "MadeUpCache", "StaticCache")
    assert generation.takes_a_capacity("MadeUpCache") and not generation.takes_a_capacity("DynamicCache")


def test_a_preallocated_users_object_gets_what_its_constructor_names_and_a_growing_one_nothing(monkeypatch):
    monkeypatch.setattr(transformers, "MadeUpCache", MadeUpCache, raising=False)
    model = SimpleNamespace(config="the config", device=torch.device("cpu"), dtype=torch.bfloat16)
    made = generation.user_cache_object(model, "MadeUpCache", batch_size=2, capacity=9)
    assert made.made_with == {"config": "the config", "max_batch_size": 2, "max_cache_len": 9,
                              "dtype": torch.bfloat16}
    assert type(generation.user_cache_object(model, "DynamicCache", batch_size=2, capacity=9)) is transformers.DynamicCache


class ForwardingCache(MadeUpCache):
    """A constructor that only forwards (4.54-4.55's StaticCache(*args, **kwargs)) takes its base's parameters."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)


def test_a_constructor_that_only_forwards_takes_its_base_classes_parameters(monkeypatch):
    monkeypatch.setattr(transformers, "ForwardingCache", ForwardingCache, raising=False)
    assert list(generation.constructor_parameters("ForwardingCache")) == ["config", "max_batch_size", "max_cache_len",
                                                                          "dtype"]
    assert generation.takes_a_capacity("ForwardingCache")


def test_the_contract_records_what_the_release_offers_under_each_member():
    assert contract.member("MadeUpCache", "crop")["signature"] is None  # no such class
    assert contract.member("DynamicCache", "crop")["signature"] == contract.parameters(transformers.DynamicCache.crop)
    assert contract.member("DynamicCache", "no_such_member")["signature"] is None
    offered = contract.member("Gemma3ForCausalLM", "forward", parameter="input_ids")
    assert offered["member"] == "forward(input_ids=)" and offered["signature"] == "(input_ids)"
    assert contract.member("Gemma3ForCausalLM", "forward", parameter="no_such_parameter")["signature"] is None
    assert contract.parameters(lambda self, max_length: None) == "(max_length)"
