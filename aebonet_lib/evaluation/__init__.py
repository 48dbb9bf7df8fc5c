"""From a trained model to the report: predictions and flags, metrics, plots, tables, Grad-CAM."""
