"""pocketbert: distil a BERT text classifier into a small student for on-device use."""

__version__ = "0.1.0"
