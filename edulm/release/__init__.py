"""Publishing a model: the training-text sample, the contamination audit, the model card, and ``edulm release``."""
