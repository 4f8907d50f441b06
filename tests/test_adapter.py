from packaging.version import Version

from cache_conformance import adapter


def test_a_release_before_gemma3_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(adapter, "INSTALLED", Version("4.49.0"))
    assert adapter.release_problem() == (
        "transformers 4.49.0 is not supported: Gemma 3 first appeared in 4.50. "
        "Install transformers>=4.50 (e.g. tox -e py311-transformers-latest)."
    )


def test_supported_releases_pass_and_newer_ones_too(monkeypatch):
    """A release newer than the adopted one is judged provisionally (tests/test_plugin_runs.py), not refused."""
    for release in ("4.50.0", "9.1.0"):
        monkeypatch.setattr(adapter, "INSTALLED", Version(release))
        assert adapter.release_problem() is None


class RecordingModel:
    """Stands in for a model: records what forward() was called with."""

    def __call__(self, input_ids, **kwargs):
        import types

        self.input_ids, self.kwargs = input_ids, kwargs
        return types.SimpleNamespace(logits=None)


def test_token_types_go_from_the_sequence_start_from_4_53_and_per_call_before(monkeypatch):
    import torch

    from cache_conformance.adapter import multimodal

    token_types = torch.tensor([[0, 1, 1, 0, 0, 1, 1, 0]])
    model = RecordingModel()
    monkeypatch.setattr(multimodal, "INSTALLED", Version("4.53.0"))
    multimodal.forward_with_images(model, torch.ones(1, 4, dtype=torch.long), pixel_values=None,
                                   token_types=token_types, start=4)
    assert model.kwargs["token_type_ids"].tolist() == [[0, 1, 1, 0, 0, 1, 1, 0]]
    monkeypatch.setattr(multimodal, "INSTALLED", Version("4.52.4"))
    multimodal.forward_with_images(model, torch.ones(1, 4, dtype=torch.long), pixel_values=None,
                                   token_types=token_types, start=4)
    assert model.kwargs["token_type_ids"].tolist() == [[0, 1, 1, 0]]
    multimodal.forward_with_images(model, torch.ones(1, 1, dtype=torch.long), pixel_values=None,
                                   token_types=token_types[:, :5], start=4)
    assert model.kwargs["token_type_ids"] is None  # one token: none, as generate() passes after its first step


def test_a_cache_is_seen_under_either_name():
    from cache_conformance.adapter import multimodal

    assert multimodal.cache_given({"past_key_values": object()})
    assert multimodal.cache_given({adapter.CACHE_KEYWORD: object()})
    assert not multimodal.cache_given({"past_key_values": None, "use_cache": False})


def test_the_static_cache_names_the_configs_sliding_layers():
    """layer_is_sliding reads the flags of the cache make_static_cache builds, and they agree with the config."""
    import torch

    from cache_conformance.plugin import checkpoint

    model = adapter.load_model(checkpoint.EMBEDDED, dtype=torch.float32, device="cpu", attn_implementation="eager")
    cache = adapter.make_static_cache(model, batch_size=1, capacity=4)
    got = [adapter.layer_is_sliding(cache, layer) for layer in range(adapter.layer_count(cache))]
    assert got == adapter.sliding_layers(model.config)


def test_the_sliding_flags_are_is_sliding_list_on_4_52_only(monkeypatch):
    """4.52's HybridCache names its flags `is_sliding_list` and has no `is_sliding`; the releases around it do not."""
    import types

    flags = [True, False]
    for release, cache in [("4.51.3", types.SimpleNamespace(is_sliding=flags)),
                           ("4.52.0", types.SimpleNamespace(is_sliding_list=flags)),
                           ("4.52.4", types.SimpleNamespace(is_sliding_list=flags)),
                           ("4.53.3", types.SimpleNamespace(is_sliding=flags))]:
        monkeypatch.setattr(adapter, "INSTALLED", Version(release))
        assert [adapter.layer_is_sliding(cache, layer) for layer in range(2)] == flags, release
