"""MobiWM Gym world model: physics digital twin, data generation and learned model."""
