"""Memory and speed: what a generation needs (estimated before anything is allocated), block swapping, compiled
blocks, and a run's speed options."""
