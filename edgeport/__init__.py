"""edgeport: take a trained model to microcontrollers and Android, verified at every stage."""

__version__ = "0.1.0"
