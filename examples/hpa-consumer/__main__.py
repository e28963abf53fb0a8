"""hpa-consumer: thin entry point; the program is hpa_consumer.py (the unit tests import it)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hpa_consumer  # noqa: E402

hpa_consumer.main()
