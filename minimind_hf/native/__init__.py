"""Native reference trainers: one readable file per algorithm and one shared training loop."""
