"""Version 2 of the model contract: what a model author touches."""
