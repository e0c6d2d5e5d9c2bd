"""S0 tuning: learned initial recurrent states for hybrid recurrent-attention models."""

__version__ = "0.1.0"
