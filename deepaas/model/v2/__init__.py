"""Version 2 of the model contract: base class, adapter, worker pool."""
