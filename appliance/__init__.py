"""Data Diode Connector appliance: moves Kafka topics and UDP streams one way across a diode."""

__version__ = "0.1.0"
