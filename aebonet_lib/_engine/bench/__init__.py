"""Speed measurements behind `aebonet bench`."""
