"""The ``skyk`` command. Command modules import heavy things inside ``run`` only."""
