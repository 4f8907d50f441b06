"""How a call is judged: the one grading of every suite, the evidence a failed check keeps, the regimes inputs must
reach, overflow's and the user calls' own grades."""
