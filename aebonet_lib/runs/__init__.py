"""The machinery around the recipe: run folders and records, checkpoints and resume, devices and precision, files."""
