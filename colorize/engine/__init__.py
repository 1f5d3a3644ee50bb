"""The training engine on Accelerate: a recipe built, its step, the loop, resuming, checkpoints and evaluation."""
