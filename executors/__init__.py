"""How a run is executed: the lifecycle base, one module per executor, runner scripts, environments."""
