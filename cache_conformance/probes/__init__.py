"""What a run did, observed rather than assumed: the cache that ran, storage and bytes, compilations, warnings, the
members a release offers, where offloaded layers run, a scenario in a process of its own."""
