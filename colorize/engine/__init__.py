"""The training engine on Accelerate: fit, evaluate, early stopping, checkpoints."""
