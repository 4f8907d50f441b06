"""The self-test: deliberate cache bugs (`faults`), patched into transformers for one pytest session
(`injection`, the `--inject-fault` option), and the run that scores what the suites catch (`run`, started as
`python -m cache_conformance.selftest`)."""
