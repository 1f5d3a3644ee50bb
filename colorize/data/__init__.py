"""Data: sources, preparation into FFCV files with their manifest and ab prior, and the loaders."""
