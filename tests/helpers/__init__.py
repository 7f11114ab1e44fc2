"""What the test modules share: tiny models, episodes, training runs, local Ray,
waiting for asynchronous events. Fixtures stay in conftest.py."""
