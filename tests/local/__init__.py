"""Tests of the one-machine stack: make demo, make send, the inbox and its page."""
