"""The user-call machinery: cache choices read from the release, and how a substituted cache is recognised."""

import torch
from transformers.generation import configuration_utils

from cache_conformance import adapter, user_calls


def test_the_choices_are_the_releases_own_list_plus_the_default_and_the_users_objects():
    choices = user_calls.cache_choices()
    listed = tuple(dict.fromkeys(configuration_utils.ALL_CACHE_IMPLEMENTATIONS))
    assert [c.implementation for c in choices if c.implementation] == list(listed)
    assert [c.id for c in choices if not c.implementation] == ["default", "object-DynamicCache", "object-StaticCache"]
    static = {c.implementation for c in choices if c.static and c.implementation}
    assert static == set(configuration_utils.ALL_STATIC_CACHE_IMPLEMENTATIONS)


def test_the_prompt_repeats_its_block():
    prompt = user_calls.repeating_prompt(lambda batch, length: torch.arange(length)[None] + 5, 7, 3)
    assert prompt.tolist() == [[5, 6, 7, 5, 6, 7, 5]]


def seen_with(sizes, objects):
    seen = user_calls.CachesSeen(model=None)
    seen.sizes, seen.objects = sizes, objects
    return seen


STATIC = user_calls.CacheChoice("implementation-static", implementation="static", static=True)
DYNAMIC = user_calls.CacheChoice("implementation-dynamic", implementation="dynamic")


def test_a_static_request_served_by_a_cache_that_grows_is_substituted():
    growing = seen_with([[9, 9], [10, 10], [11, 11]], [object()])
    assert "changed size between forward calls (2 layers; layer 0: [9, 10, 11]" in user_calls.substitution(
        STATIC, {}, growing)
    assert user_calls.substitution(DYNAMIC, {}, growing) is None  # a dynamic request may grow


def test_a_preallocated_cache_is_not_substituted_even_if_allocated_at_the_first_call():
    lazily_allocated = seen_with([[0, 0], [32, 8], [32, 8]], [object()])
    assert user_calls.substitution(STATIC, {}, lazily_allocated) is None


def test_a_users_object_the_model_never_got_is_substituted():
    given, other = object(), object()
    choice = user_calls.CacheChoice("object-DynamicCache", object_class="DynamicCache")
    problem = user_calls.substitution(choice, {adapter.CACHE_KEYWORD: given}, seen_with([[3]], [other]))
    assert problem.startswith("the user's DynamicCache was passed as")
    assert user_calls.substitution(choice, {adapter.CACHE_KEYWORD: given}, seen_with([[3]], [given])) is None


def test_a_call_that_never_reached_the_model_is_not_judged_for_substitution():
    assert user_calls.substitution(STATIC, {}, seen_with([], [])) is None
