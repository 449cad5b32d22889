"""Helpers the test suites share: throwaway PostgreSQL clusters, process control."""
