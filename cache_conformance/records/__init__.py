"""The files the runs and the tools share: results files (one writer, one reader), the expectations, the suite
registry."""
