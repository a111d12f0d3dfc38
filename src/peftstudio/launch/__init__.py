"""Running elsewhere: worker processes (accelerate / torchrun) and SkyPilot tasks on rented GPUs."""
