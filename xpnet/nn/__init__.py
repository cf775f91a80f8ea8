"""The network: activations, losses, initialisers and the MLP (forward, backward, one training step)."""
