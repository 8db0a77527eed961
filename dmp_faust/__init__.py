"""dmp-faust: the real-time core of a data management platform on Faust and Kafka."""

__version__ = "0.1.0"
