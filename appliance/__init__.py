"""Data Diode Connector appliance: moves Kafka topics and UDP streams one way across a diode."""

