"""What the right answer is: recomputation without any cache, the window oracle, the recorded reference logits, and
the comparisons with their tolerances."""
