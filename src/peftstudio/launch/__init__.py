"""Run a peftstudio config on rented GPUs through a generated SkyPilot task."""
