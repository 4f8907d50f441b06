"""The tool that turns a finding into a standalone script: one record of a results file, its call made again with
torch and transformers alone and graded against recomputation without cache (`script` writes it, `__main__` is
`python -m cache_conformance.repro`)."""
