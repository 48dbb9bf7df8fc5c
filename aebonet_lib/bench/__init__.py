"""Speed measurements behind `aebonet bench` (chapter 5): plans, measurements, the Markdown report."""
