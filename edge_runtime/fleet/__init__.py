"""The operator's side of model updates: the fleet config, signing and publishing desired
states, and the update server that hands artifacts to devices in chunks."""
