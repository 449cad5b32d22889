"""Configuration: the settings of every command, and the live values the controller sets."""
