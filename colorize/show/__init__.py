"""What people look at: colour grids, the per-epoch visuals of a run, and W&B tracking."""
