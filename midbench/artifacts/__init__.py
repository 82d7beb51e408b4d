"""Models in and out: checkpoints and their metadata, the one way to load a classifier (a checkpoint, a state dict,
``module:factory`` or a zoo entry), and the safe reader of legacy pickles."""
