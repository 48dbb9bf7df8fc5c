"""Networks beside the recipe: the ImageNet baselines and measures of a network (FLOPs, reconstruction metrics)."""
