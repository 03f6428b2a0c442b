"""Fleet serving: many simulated robots against Triton servers (``policy-export bench-fleet``)."""
