"""Helpers the tests share by name (servers, data); no test module imports another."""
