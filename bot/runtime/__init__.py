"""The processes (`web`, `worker`, Socket Mode) and the composition root wiring them."""
