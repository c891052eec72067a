"""Tests of the playground page (in headless Chromium) and of ``guidance-server check``."""
