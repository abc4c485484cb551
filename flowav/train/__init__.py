"""Training: state, optimizer, pure train step, checkpoints, loop."""
