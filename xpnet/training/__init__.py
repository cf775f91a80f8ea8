"""Loops over the one training step: the eager Trainer, its CUDA-graph subclass, the run recipe,
the LR range test and gradient checking."""
